import ArgumentParser
import SinkdCLI

/// The executable's entry point; the command tree lives in SinkdCLI so tests can reach it.
@main
struct Sinkd: AsyncParsableCommand {
    static let configuration = SinkdCommand.configuration
}
