using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// Points the tuning cache (GPUATTENTION_TUNING_DIR) at a fresh temporary folder for the whole test run, so no test (nor a
/// CLI child process, which inherits the environment) reads or writes the real per-user cache under ~/.cache.
/// </summary>
[SetUpFixture]
public sealed class TuningCacheIsolation
{
    public static string Dir { get; private set; } = "";

    [OneTimeSetUp]
    public void Isolate()
    {
        Dir = Path.Combine(Path.GetTempPath(), "gpuattention-tests", "tuning-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Dir);
        Environment.SetEnvironmentVariable("GPUATTENTION_TUNING_DIR", Dir);
    }

    [OneTimeTearDown]
    public void Clean()
    {
        try { Directory.Delete(Dir, true); } catch (IOException) { }
    }
}
