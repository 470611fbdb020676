using System.Diagnostics;
using System.Text.Json;
using GpuAttention.IO;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// The CUDA backend's host code without a GPU: the CLI runs as a separate process against a fake <c>libcuda.so.1</c>
/// (host memory, no kernel execution, launches logged with their parameters decoded from the PTX .entry signature),
/// built here with the C compiler. This runs CudaBackend's discovery, context/stream/event handling, memory copies,
/// NVRTC → PTX → module load, argument marshalling, grid computation and event timing. Skipped without Linux, cc
/// or NVRTC.
/// </summary>
[TestFixture]
[NonParallelizable]
[Category("Slow")]   // a process, a compiler or a tuning run: skipped by the fast tier (--filter TestCategory!=Slow)
public class FakeCudaDriverTests
{
    private string _dir = null!;

    [OneTimeSetUp]
    public void BuildFakeDriver()
    {
        if (!OperatingSystem.IsLinux()) Assert.Ignore("the fake driver is a Linux shared library");
        if (!Backends.Cuda.Native.Nvrtc.TryLoad(out var why)) Assert.Ignore(why!);
        _dir = CliRunner.TempDir();
        File.WriteAllText(Path.Combine(_dir, "fake.c"), FakeDriverSource);
        try
        {
            var (code, output) = Exec("cc", ["-shared", "-fPIC", "-O1", "-o", Path.Combine(_dir, "libcuda.so.1"), Path.Combine(_dir, "fake.c")], null);
            if (code != 0) Assert.Ignore("cc failed: " + output);
        }
        catch (System.ComponentModel.Win32Exception e) { Assert.Ignore("no C compiler (cc) to build the fake libcuda.so.1: " + e.Message); }
    }

    [OneTimeTearDown]
    public void Clean() { if (_dir is not null && Directory.Exists(_dir)) Directory.Delete(_dir, true); }

    private static (int Code, string Output) Exec(string file, string[] args, Dictionary<string, string>? env)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (env is not null) foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var so = p.StandardOutput.ReadToEndAsync();
        var se = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(300_000)) { p.Kill(true); throw new TimeoutException($"{file} did not finish in 300 s"); }
        return (p.ExitCode, so.Result + se.Result);
    }

    private (int Code, string Output) Cli(params string[] args)
    {
        var env = new Dictionary<string, string>
        {
            ["LD_LIBRARY_PATH"] = _dir,
            ["GPUATTENTION_CACHE_DIR"] = Path.Combine(_dir, "cache"),
        };
        return Exec(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet", [Path.GetFullPath(CliRunner.CliPath), .. args], env);
    }

    [Test]
    public void RunsTheWholeHostPathAgainstTheFakeDriver()
    {
        var (code, output) = Cli("devices");
        Assert.That(code, Is.Zero, output);
        Assert.That(output, Does.Contain("cuda:0     Fake GPU, sm_90, 132 SM, 8.0 GiB, driver CUDA 12.4, NVRTC"));

        // run sdpa: one launch with the arguments of KernelBackend.SdpaForward, timed with events (the fake says 0.25 ms).
        var inDir = Path.Combine(_dir, "in");
        var outDir = Path.Combine(_dir, "out");
        Directory.CreateDirectory(inDir);
        var rng = new Random(5);
        Npy.Write(Path.Combine(inDir, "q.npy"), NpyArray.FromFloats(TestUtil.Random(rng, 2 * 4 * 37 * 17), 2, 4, 37, 17));
        Npy.Write(Path.Combine(inDir, "k.npy"), NpyArray.FromFloats(TestUtil.Random(rng, 2 * 2 * 53 * 17), 2, 2, 53, 17));
        Npy.Write(Path.Combine(inDir, "v.npy"), NpyArray.FromFloats(TestUtil.Random(rng, 2 * 2 * 53 * 23), 2, 2, 53, 23));
        Npy.Write(Path.Combine(inDir, "mask.npy"), NpyArray.FromFloats(new float[37 * 53], 37, 53));
        (code, output) = Cli("run", "sdpa", "--backend", "cuda", "--in", inDir, "--out", outDir, "--causal", "--scale", "0.5", "--warmup", "1", "--repeat", "3");
        Assert.That(code, Is.Zero, output);
        Assert.That(output, Does.Contain("fake: module loaded").And.Contain("has .target"));
        Assert.That(output, Does.Contain("fake: launch grid 2x8x1 block 32x1x1 shared 0"), "grid = ceil(L / BLOCK_M) x B*Hq, block = BLOCK_M");
        var launch = output[output.IndexOf("fake: launch", StringComparison.Ordinal)..].Split('\n').Skip(1).Take(17).Select(l => l.Trim()).ToArray();
        Assert.That(launch[3], Does.Match(@"^param 3 u64 0x[0-9a-f]+$"), "mask passed as a device pointer");
        Assert.That(launch[6..13], Is.EqualTo(new[] { "param 6 32 4", "param 7 32 2", "param 8 32 37", "param 9 32 53", "param 10 f32 0.5", "param 11 32 1", "param 12 32 1" }));
        Assert.That(launch[13..17], Is.EqualTo(new[] { "param 13 u64 0", "param 14 u64 0", "param 15 u64 0x35", "param 16 u64 0x1" }), "int64 mask strides of an [L, S] mask");
        var json = JsonDocument.Parse(output.Split('\n').Last(l => l.StartsWith('{'))).RootElement;
        Assert.That(json.GetProperty("backend").GetString(), Is.EqualTo("cuda:0"));
        Assert.That(json.GetProperty("median_ms").GetDouble(), Is.EqualTo(0.25), "--repeat uses the device timer (CUDA events)");
        Assert.That(output, Does.Contain(LiveAtExitZero), "every CUDA object of the run (context, buffers, module, stream, events) released by Dispose");

        // verify: the kernels never run on the fake, so every case must FAIL (poisoned outputs), exit code 1.
        (code, output) = Cli("verify", "--backend", "cuda");
        Assert.That(code, Is.EqualTo(1), output);
        Assert.That(output, Does.Match(@"(?m)^0 passed, [1-9]\d* failed$"));
        Assert.That(output, Does.Contain("fake: primary ctx released"), "the context is released once the device and its buffers are gone");
        Assert.That(output, Does.Contain("param 3 u64 0\n"), "an absent mask is a null pointer");
        Assert.That(output, Does.Contain(LiveAtExitZero), "every op's buffers, scratch, modules and events released");

        // A second process takes the PTX from the disk cache: no new files.
        int files = Directory.GetFiles(Path.Combine(_dir, "cache", "ptx")).Length;
        Assert.That(files, Is.GreaterThan(0));
        (code, _) = Cli("verify", "--backend", "cuda");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(Directory.GetFiles(Path.Combine(_dir, "cache", "ptx")), Has.Length.EqualTo(files));
        Assert.That(Directory.GetFiles(Path.Combine(_dir, "cache", "ptx"), "*.tmp"), Is.Empty);
    }

    /// <summary>The fake driver's count of live objects at process exit when everything was released.</summary>
    private const string LiveAtExitZero = "fake: live at exit: ctx 0 mem 0 module 0 stream 0 event 0";

    /// <summary>
    /// Create/dispose cycles: `soak --iterations N` opens the device once and runs every op case N times (tensors, scratch and
    /// modules created and disposed per iteration); the kernels do not run on the fake, so the comparison fails, but the counts
    /// the fake keeps must be back at zero when the process ends, whatever N is.
    /// </summary>
    [Test]
    public void CreateDisposeCyclesLeaveNoLiveCudaObjects()
    {
        foreach (var n in new[] { "1", "4" })
        {
            var (_, output) = Cli("soak", "--backend", "cuda", "--iterations", n, "--skip", "multihead", "--interval", "1000");
            Assert.That(output, Does.Contain("fake: launch").And.Contain($"{n} iterations, "), output);
            Assert.That(output, Does.Contain(LiveAtExitZero), $"--iterations {n}: {output[^Math.Min(output.Length, 2000)..]}");
        }
    }

    private const string FakeDriverSource = """
// Fake CUDA driver for a smoke test without a GPU: host memory, no kernel execution; launches are logged with
// their parameters decoded from the PTX .entry signature.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
typedef int CUresult;
static const char* g_ptx;
// live native objects, printed at exit: a handle the library forgot to release stays counted (.NET runs no finalizers at exit)
static long live_ctx, live_mem, live_mod, live_stream, live_event;
__attribute__((destructor)) static void report_live(void){
  fprintf(stderr,"fake: live at exit: ctx %ld mem %ld module %ld stream %ld event %ld\n",live_ctx,live_mem,live_mod,live_stream,live_event);}
CUresult cuInit(unsigned f){return 0;}
CUresult cuDriverGetVersion(int* v){*v=12040;return 0;}
CUresult cuDeviceGetCount(int* n){*n=1;return 0;}
CUresult cuDeviceGet(int* d,int o){*d=o;return 0;}
CUresult cuDeviceGetName(char* n,int len,int d){snprintf(n,len,"Fake GPU");return 0;}
CUresult cuDeviceGetAttribute(int* v,int a,int d){
  switch(a){case 1:*v=1024;break;case 5:*v=2147483647;break;case 6:case 7:*v=65535;break;case 8:*v=49152;break;
  case 16:*v=132;break;case 75:*v=9;break;case 76:*v=0;break;default:*v=1024;}return 0;}
CUresult cuDeviceTotalMem_v2(size_t* b,int d){*b=(size_t)8<<30;return 0;}
CUresult cuDevicePrimaryCtxRetain(void** c,int d){*c=(void*)0x1234;live_ctx++;return 0;}
CUresult cuDevicePrimaryCtxRelease_v2(int d){live_ctx--;fprintf(stderr,"fake: primary ctx released\n");return 0;}
CUresult cuCtxSetCurrent(void* c){return c==(void*)0x1234?0:201;}
CUresult cuCtxPushCurrent_v2(void* c){return 0;}
CUresult cuCtxPopCurrent_v2(void** c){return 0;}
CUresult cuMemAlloc_v2(uint64_t* p,size_t b){*p=(uint64_t)malloc(b);live_mem++;return 0;}
CUresult cuMemFree_v2(uint64_t p){free((void*)p);live_mem--;return 0;}
CUresult cuMemcpyHtoDAsync_v2(uint64_t d,const void* s,size_t b,void* st){memcpy((void*)d,s,b);return 0;}
CUresult cuMemcpyDtoHAsync_v2(void* d,uint64_t s,size_t b,void* st){memcpy(d,(void*)s,b);return 0;}
CUresult cuMemsetD32Async(uint64_t d,unsigned v,size_t n,void* st){for(size_t i=0;i<n;i++)((unsigned*)d)[i]=v;return 0;}
CUresult cuModuleLoadDataEx(void** m,const void* img,unsigned n,int* o,void** v){
  g_ptx=strdup((const char*)img); *m=(void*)g_ptx; live_mod++;
  fprintf(stderr,"fake: module loaded, %zu bytes of PTX, %s\n",strlen(g_ptx),strstr(g_ptx,".target")?"has .target":"NO TARGET");return 0;}
CUresult cuModuleUnload(void* m){free(m);live_mod--;return 0;}
CUresult cuModuleGetFunction(void** f,void* m,const char* name){
  char pat[256];snprintf(pat,sizeof pat,".entry %s(",name);
  const char* e=strstr((const char*)m,pat); if(!e) return 500; *f=(void*)e; return 0;}
CUresult cuLaunchKernel(void* f,unsigned gx,unsigned gy,unsigned gz,unsigned bx,unsigned by,unsigned bz,unsigned sh,void* st,void** params,void** extra){
  const char* e=(const char*)f; const char* end=strchr(e,')');
  fprintf(stderr,"fake: launch grid %ux%ux%u block %ux%ux%u shared %u\n",gx,gy,gz,bx,by,bz,sh);
  int i=0; const char* p=e;
  while((p=strstr(p,".param"))&&p<end){ p+=6; while(*p==' ')p++;
    if(!strncmp(p,".u64",4)) fprintf(stderr,"  param %d u64 %#llx\n",i,(unsigned long long)*(uint64_t*)params[i]);
    else if(!strncmp(p,".u32",4)||!strncmp(p,".s32",4)) fprintf(stderr,"  param %d 32 %d\n",i,*(int*)params[i]);
    else if(!strncmp(p,".f32",4)) fprintf(stderr,"  param %d f32 %g\n",i,*(float*)params[i]);
    else if(!strncmp(p,".s64",4)) fprintf(stderr,"  param %d s64 %lld\n",i,*(long long*)params[i]);
    else fprintf(stderr,"  param %d ?? %.8s\n",i,p);
    i++;}
  return 0;}
CUresult cuStreamCreate(void** s,unsigned f){*s=(void*)0x55;live_stream++;return 0;}
CUresult cuStreamDestroy_v2(void* s){live_stream--;return 0;}
CUresult cuStreamSynchronize(void* s){return 0;}
CUresult cuEventCreate(void** e,unsigned f){*e=malloc(8);live_event++;return 0;}
CUresult cuEventDestroy_v2(void* e){free(e);live_event--;return 0;}
CUresult cuEventRecord(void* e,void* s){return 0;}
CUresult cuEventSynchronize(void* e){return 0;}
CUresult cuEventElapsedTime(float* ms,void* a,void* b){*ms=0.25f;return 0;}
CUresult cuGetErrorName(CUresult r,const char** s){*s=r==500?"CUDA_ERROR_NOT_FOUND":"CUDA_ERROR_FAKE";return 0;}
""";
}
