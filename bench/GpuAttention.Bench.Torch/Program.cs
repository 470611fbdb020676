// `compare [--reps N] [--only TEXT] [--out FILE.md]`: the interleaved same-process comparison with LibTorch (with --out,
// also FILE.png, its chart); `chart IN.md [OUT.png]`: that chart from an existing comparison's Markdown, without running
// anything; `limits`: the machine-limit probe; anything else goes to BenchmarkDotNet (LibTorch as the baseline of each class).
if (args.Length > 0 && args[0] == "compare") return GpuAttention.Bench.Torch.Compare.Run(args);
if (args.Length > 0 && args[0] == "chart") return GpuAttention.Bench.Torch.CompareChart.Run(args);
if (args.Length > 0 && args[0] == "limits") return GpuAttention.Bench.MachineLimits.Run(args);
BenchmarkDotNet.Running.BenchmarkSwitcher.FromAssembly(typeof(GpuAttention.Bench.Torch.Compare).Assembly).Run(args);
return 0;
