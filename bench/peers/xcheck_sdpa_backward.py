# Cross-checks `gpuattention run sdpa-backward` against PyTorch float64 autograd (by hand; the test suite needs no Python).
# Also checks `run sdpa` (out, lse) on the same inputs.
# usage: python3 bench/peers/xcheck_sdpa_backward.py [BACKEND,BACKEND...]   (after dotnet build; default cpu,opencl)
import numpy as np, torch, subprocess, os, tempfile, sys, json
CLI = os.environ.get("GPUATTENTION_CLI", os.path.join(os.path.dirname(__file__), "../../src/GpuAttention.Cli/bin/Debug/net10.0/gpuattention.dll"))
def case(B,Hq,Hkv,L,S,E,Ev,causal=False,mask=None,scale=None,seed=0,backend="cpu"):
    rng=np.random.default_rng(seed)
    f=lambda *s: rng.uniform(-1,1,s).astype(np.float32)
    q,k,v,g=f(B,Hq,L,E),f(B,Hkv,S,E),f(B,Hkv,S,Ev),f(B,Hq,L,Ev)
    m=None
    if mask=="bool": m=rng.random((B,1,L,S))<0.8; m[...,0]=True
    if mask=="float": m=rng.uniform(-1,1,(L,S)).astype(np.float32)
    sc=scale if scale is not None else 1/np.sqrt(E)
    T=lambda a: torch.tensor(a,dtype=torch.float64,requires_grad=True)
    tq,tk,tv=T(q),T(k),T(v)
    G=Hq//Hkv
    kk=tk.repeat_interleave(G,dim=1); vv=tv.repeat_interleave(G,dim=1)
    s=tq@kk.transpose(-1,-2)*float(np.float32(sc))
    if m is not None:
        s = s.masked_fill(~torch.tensor(m), float('-inf')) if m.dtype==bool else s+torch.tensor(m,dtype=torch.float64)
    if causal: s=s.masked_fill(torch.ones(L,S,dtype=torch.bool).triu(1), float('-inf'))
    lse=torch.logsumexp(s,-1); o=torch.softmax(s,-1)@vv
    o.backward(torch.tensor(g,dtype=torch.float64))
    d=tempfile.mkdtemp(); od=tempfile.mkdtemp()
    for n,a in dict(q=q,k=k,v=v,grad_out=g,out=o.detach().numpy().astype(np.float32),lse=lse.detach().numpy().astype(np.float32)).items(): np.save(f"{d}/{n}.npy",a)
    if m is not None: np.save(f"{d}/mask.npy",m)
    args=["dotnet",CLI,"run","sdpa-backward","--backend",backend,"--in",d,"--out",od]+(["--causal"] if causal else [])+(["--scale",str(scale)] if scale else [])
    r=subprocess.run(args,capture_output=True,text=True)
    if r.returncode: print("FAIL",r.stderr); return
    fd=tempfile.mkdtemp()
    r=subprocess.run(args[:3]+["sdpa"]+args[4:6]+["--in",d,"--out",fd]+args[10:],capture_output=True,text=True)
    if r.returncode: print("FAIL",r.stderr); return
    errs=[]
    for n,t in (("out",o),("lse",lse)):
        a=np.load(f"{fd}/{n}.npy").astype(np.float64); ref=t.detach().numpy()
        fin=np.isfinite(ref)
        if not np.array_equal(fin,np.isfinite(a)): errs.append(np.inf); continue
        errs.append(np.linalg.norm(a[fin]-ref[fin])/max(np.linalg.norm(ref[fin]),1e-30))
    for n,t in (("grad_q",tq),("grad_k",tk),("grad_v",tv)):
        a=np.load(f"{od}/{n}.npy").astype(np.float64); ref=t.grad.numpy()
        errs.append(np.linalg.norm(a-ref)/np.linalg.norm(ref))
    print(backend,(B,Hq,Hkv,L,S,E,Ev),"causal" if causal else "", mask or "", "max rel err %.2e"%max(errs), "OK" if max(errs)<=1e-4 else "BAD")
for be in (sys.argv[1] if len(sys.argv) > 1 else "cpu,opencl").split(","):
    case(2,4,2,37,53,17,23,backend=be)
    case(1,6,2,70,133,64,64,causal=True,backend=be,seed=1)
    case(2,2,1,45,21,16,8,causal=True,mask="bool",backend=be,seed=2)
    case(1,3,3,29,66,32,40,mask="float",scale=0.3,backend=be,seed=3)
    case(1,8,1,1,200,64,64,backend=be,seed=4)
