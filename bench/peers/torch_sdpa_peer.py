# PyTorch peer for bench/SdpaBackwardBench: autograd of matmul-softmax-matmul, B1 H8 L=S=1024 E64, 2 threads.
import torch, time, math
torch.set_num_threads(2)
B,H,L,E=1,8,1024,64
q,k,v=[torch.randn(B,H,L,E,requires_grad=True) for _ in range(3)]
g=torch.randn(B,H,L,E)
def step(causal=False):
    s=q@k.transpose(-1,-2)/math.sqrt(E)
    if causal: s=s.masked_fill(torch.ones(L,L,dtype=torch.bool).triu(1),float('-inf'))
    o=torch.softmax(s,-1)@v
    o.backward(g)
    return o
def fwd():
    with torch.no_grad():
        s=q@k.transpose(-1,-2)/math.sqrt(E); return torch.softmax(s,-1)@v
for name,fn in (("fwd",fwd),("fwd+bwd",step)):
    for _ in range(2): fn()
    ts=[]
    for _ in range(7):
        t=time.perf_counter(); fn(); ts.append((time.perf_counter()-t)*1e3)
    ts.sort(); print(name, "median %.1f ms min %.1f ms"%(ts[3],ts[0]))
