using GpuAttention.IO;

namespace GpuAttention.Cli.Ops;

/// <summary>One operation of `gpuattention run`: which files it reads and writes, and how it runs on a device.</summary>
internal interface ICliOp
{
    /// <summary>The OP word, e.g. "sdpa-backward".</summary>
    string Name { get; }
    /// <summary>Prepares the op: validates shapes, uploads inputs and allocates outputs. Throws TensorShapeException / InputException on bad input.</summary>
    PreparedRun Prepare(Device device, InputSet inputs, RunOptions options);
}

/// <summary>An op with its tensors on a device: <see cref="Launch"/> runs it (no copies), <see cref="Collect"/> downloads the outputs.</summary>
internal sealed class PreparedRun(Action launch, Func<IReadOnlyList<(string Name, NpyArray Array)>> collect, IEnumerable<IDisposable> owned) : IDisposable
{
    private readonly List<IDisposable> _owned = owned.ToList();
    public Action Launch { get; } = launch;
    public Func<IReadOnlyList<(string Name, NpyArray Array)>> Collect { get; } = collect;
    public void Dispose() { foreach (var d in _owned) d.Dispose(); }
}

/// <summary>The input directory of a run: NAME.npy files read on demand.</summary>
internal sealed class InputSet(string dir)
{
    public string Dir { get; } = dir;

    public bool Has(string name) => File.Exists(Path.Combine(Dir, name + ".npy"));

    /// <summary>Reads NAME.npy; a missing file or a dtype other than float32 is an InputException naming the tensor.</summary>
    public NpyArray Float(string name, string expectedShape)
    {
        var a = Any(name, expectedShape);
        if (a.DType != NpyDType.Float32) throw new InputException($"{name}: expected float32 ('<f4') {expectedShape}, got bool {a.ShapeText}");
        return a;
    }

    /// <summary>Reads NAME.npy of either dtype.</summary>
    public NpyArray Any(string name, string expectedShape)
    {
        string path = Path.Combine(Dir, name + ".npy");
        if (!File.Exists(path)) throw new InputException($"{name}: missing file {path} (expected {expectedShape})");
        return Npy.Read(path, name);
    }

    /// <summary>Reads NAME.npy if present.</summary>
    public NpyArray? Optional(string name, string expectedShape) => Has(name) ? Any(name, expectedShape) : null;
}

/// <summary>Small helpers shared by the op commands.</summary>
internal static class OpHelpers
{
    /// <summary>Uploads a float array after checking its rank.</summary>
    public static Tensor Upload(Device device, NpyArray a, string name, int rank, string symbolic)
    {
        if (a.Shape.Length != rank) throw new TensorShapeException(name, $"rank {rank} {symbolic}", a.ShapeText);
        return device.Upload(a.Floats!, a.Shape);
    }

    public static (string, NpyArray) Out(Device device, Tensor t, string name) => (name, NpyArray.FromFloats(device.Download(t), t.Shape.ToArray()));
}
