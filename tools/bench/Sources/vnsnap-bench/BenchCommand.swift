import ArgumentParser

/// `vnsnap-bench`: load generators and benchmarks for vnsnap-peer (see BENCHMARKS.md).
@main
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vnsnap-bench",
        abstract: "Load generators and benchmarks for vnsnap-peer.",
        subcommands: [
            InjectCommand.self, SwitchAloneCommand.self, SimulateCommand.self, MembershipBenchCommand.self,
            ImageWriterCommand.self, StoreSpliceCommand.self, UnsealCommand.self,
        ]
    )
}
