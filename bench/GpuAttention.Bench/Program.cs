// `limits`: the machine-limit probe (FMA peak, copy bandwidth); anything else goes to BenchmarkDotNet.
if (args.Length > 0 && args[0] == "limits") return GpuAttention.Bench.MachineLimits.Run(args);
BenchmarkDotNet.Running.BenchmarkSwitcher.FromAssembly(typeof(GpuAttention.Bench.MachineLimits).Assembly).Run(args);
return 0;
