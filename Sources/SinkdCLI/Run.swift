import ArgumentParser
import SinkdCore

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the daemon: accept records on the ingest socket and forward them to their sinks."
    )

    @OptionGroup var options: ConfigOption

    func run() async throws {
        let config = try options.load()
        _ = config
    }
}
