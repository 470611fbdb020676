using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Parsing;
using System.Reflection;
using System.Text.RegularExpressions;

namespace GpuAttention.Cli;

/// <summary>
/// Entry point of `gpuattention` (CONTRACT.md, "Command line"), on System.CommandLine. Every error is one line on stderr:
/// exit 2 for usage errors (with a hint naming the command's --help), 1 for bad input, an unavailable device or a failed check.
/// </summary>
public static partial class Program
{
    /// <summary>The commands, in the order --help lists them. A new command adds its builder here.</summary>
    private static IEnumerable<Command> Commands()
    {
        yield return RunCommand.Build();
        yield return DevicesCommand.Build();
        yield return Verify.VerifyCommand.Build();
        yield return DemoCommand.Build();
        yield return Soak.SoakCommand.Build();
        yield return Tune.TuneCommand.Build();
        yield return Ptx.PtxCommand.Build();
    }

    /// <summary>The root command with every subcommand, --help and --version.</summary>
    internal static RootCommand BuildRoot()
    {
        var root = new RootCommand("Attention kernels (SDPA, affine_grid, grid_sample, glimpses; forward and backward) "
            + "on NumPy files.");
        foreach (var c in Commands()) root.Subcommands.Add(c);
        foreach (var h in root.Options.OfType<HelpOption>())
            if (h.Action is HelpAction standard)
            {
                if (Console.IsOutputRedirected) standard.MaxWidth = 100;   // a file or a pipe: no terminal width to follow
                h.Action = new CliHelpAction(standard);
            }
        root.SetAction(int (_) => throw new UsageException($"expected a command: {CliOptions.Words(root.Subcommands.Select(c => c.Name).ToList())}"));
        return root;
    }

    private static string FirstSentence(string text)
    {
        int end = text.IndexOf(". ", StringComparison.Ordinal);
        return end < 0 ? text : text[..(end + 1)];
    }

    /// <summary>The version --version prints: the informational version without the source-revision suffix.</summary>
    internal static string Version =>
        (typeof(Program).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0").Split('+')[0];

    public static int Main(string[] args)
    {
        // `gpuattention help [COMMAND]` reads as `gpuattention [COMMAND] --help`.
        if (args is ["help", .. var rest]) args = [.. rest, "--help"];
        var root = BuildRoot();
        ParseResult parse;
        try { parse = root.Parse(args, new ParserConfiguration { ResponseFileTokenReplacer = null }); }   // "@x" is a value, not a response file
        catch (Exception e) { return CliErrors.Fail(2, CliErrors.Clean(e)); }
        string path = CommandPath(parse.CommandResult);

        // --help wins over other errors on its line (`run --bogus --help` shows run's help).
        if (parse.Action is CliHelpAction || parse.Errors.Count == 0)
        {
            try
            {
                return parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
            }
            catch (Exception e)
            {
                while (e is TargetInvocationException or AggregateException && e.InnerException is { } inner) e = inner;
                return e switch
                {
                    UsageException => CliErrors.Fail(2, e.Message, path),
                    _ when CliErrors.IsInputError(e) => CliErrors.Fail(1, CliErrors.Clean(e)),
                    _ => CliErrors.Fail(1, $"internal error: {e.GetType().Name}: {CliErrors.Clean(e)}"),
                };
            }
        }
        return CliErrors.Fail(2, ParseErrorMessage(parse), path);
    }

    /// <summary>
    /// --help: the library's help for a command; for the root a short page that lists each command by its first sentence
    /// (`COMMAND --help` shows all of it).
    /// </summary>
    private sealed class CliHelpAction(HelpAction standard) : System.CommandLine.Invocation.SynchronousCommandLineAction
    {
        public override int Invoke(ParseResult parseResult)
        {
            if (parseResult.CommandResult.Command is not RootCommand root) return standard.Invoke(parseResult);
            var o = Console.Out;
            o.WriteLine($"gpuattention {Version}");
            o.WriteLine(root.Description);
            o.WriteLine();
            o.WriteLine("Usage:");
            o.WriteLine("  gpuattention COMMAND [options]");
            o.WriteLine("  gpuattention COMMAND --help");
            o.WriteLine();
            o.WriteLine("Commands:");
            int w = root.Subcommands.Max(c => c.Name.Length);
            foreach (var c in root.Subcommands.Where(c => !c.Hidden))
                o.WriteLine($"  {c.Name.PadRight(w)}  {(c.Name == "run" ? RunCommand.Summary : FirstSentence(c.Description ?? ""))}");
            o.WriteLine();
            o.WriteLine("Options:");
            o.WriteLine("  -h, --help  Show help and usage information");
            o.WriteLine("  --version   Show version information");
            return 0;
        }
    }

    /// <summary>"gpuattention run" for the command the parse ended in.</summary>
    private static string CommandPath(CommandResult? r)
    {
        var names = new List<string>();
        for (var c = r; c is not null; c = c.Parent as CommandResult)
            names.Add(c.Command is RootCommand ? "gpuattention" : c.Command.Name);
        names.Reverse();
        return names.Count == 0 ? "gpuattention" : string.Join(" ", names);
    }

    /// <summary>The first parse error in the CLI's words (the options' own messages pass through unchanged).</summary>
    internal static string ParseErrorMessage(ParseResult parse)
    {
        var error = parse.Errors[0].Message;
        if (parse.UnmatchedTokens.Count > 0 && error.StartsWith("Unrecognized command or argument", StringComparison.Ordinal))
        {
            string t = parse.UnmatchedTokens[0];
            string where = parse.CommandResult.Command is RootCommand ? "" : parse.CommandResult.Command.Name + ": ";
            return t.StartsWith('-') ? $"{where}unknown option '{t}'"
                : parse.CommandResult.Command is RootCommand ? $"unknown command '{t}'" : $"{where}unexpected argument '{t}'";
        }
        if (MissingValue().Match(error) is { Success: true } m) return $"{m.Groups[1].Value}: expected a value";
        return error.TrimEnd('.');
    }

    [GeneratedRegex(@"^Required argument missing for option: '([^']+)'")]
    private static partial Regex MissingValue();
}

/// <summary>`gpuattention devices`: every backend and device found, and why a missing one is missing.</summary>
internal static class DevicesCommand
{
    public static Command Build()
    {
        var cmd = new Command("devices", "Lists every backend and device found, and why a missing one is missing. For example 'cuda: libcuda.so.1 not found'.");
        cmd.SetAction(_ =>
        {
            foreach (var d in Device.Probe())
                Console.Out.WriteLine(d.Available ? $"{d.Spec,-10} {d.Name}" : $"{d.Spec,-10} (missing) {d.Reason}");
            string dir = Backends.Kernels.Tuning.TuningCache.Directory;
            int files = Directory.Exists(dir) ? Directory.GetFiles(dir, "*.json").Length : 0;
            Console.Out.WriteLine($"tuning cache: {dir} ({files} device file{(files == 1 ? "" : "s")}; `gpuattention tune --show` prints them)");
            return 0;
        });
        return cmd;
    }
}
