import ArgumentParser
import Foundation
import SinkdCore

/// `sinkd`: the root command. Each subcommand lives in a file of its own.
public struct SinkdCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "sinkd",
        abstract: "A durable event-forwarding sidecar for Netflix Conductor's EVENT tasks.",
        discussion: """
            Conductor writes each EVENT task's message to sinkd's Unix socket; sinkd stores it in \
            a write-ahead log, acknowledges it once it is durable, and forwards it to the queue \
            named by the task's sink (\(SinkPrefix.allCases.map { $0 == .conductor ? "conductor" : $0.rawValue + ":" }.joined(separator: ", "))) \
            with retries, backoff and a dead-letter store.

            The configuration is read from --config, else $SINKD_CONFIG, else /etc/sinkd/sinkd.yaml.

            README.md is the place to start; docs/OPERATIONS.md (running it), docs/PROTOCOL.md (the \
            socket), docs/ARCHITECTURE.md, docs/RELIABILITY.md and docs/PERFORMANCE.md say the rest.
            """,
        version: SinkdVersion.version,
        subcommands: [
            Run.self, Send.self, Status.self, Top.self, Reload.self, DLQ.self, CheckConfig.self, WALCommand.self,
            Version.self,
        ]
    )

    public init() {}
}

/// `--config` as every subcommand that reads the configuration takes it.
struct ConfigOption: ParsableArguments {
    @Option(
        name: .shortAndLong,
        help: ArgumentHelp(
            "The configuration file.", discussion: "Default: $SINKD_CONFIG, else /etc/sinkd/sinkd.yaml.",
            valueName: "path"))
    var config: String?

    var path: String {
        ConfigLoader.resolvePath(flag: config, environment: ProcessInfo.processInfo.environment)
    }

    /// Loads the configuration, or prints every error to stderr and exits 1.
    func load() throws -> SinkdConfig {
        do {
            return try ConfigLoader.load(path: path)
        } catch {
            Terminal.printError(error.description)
            let count = error.errors.count
            Terminal.printError("\(count) error\(count == 1 ? "" : "s") in \(path)")
            throw ExitCode(1)
        }
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print sinkd's version and the configuration schema it reads.")

    func run() {
        #if DEBUG
        // Said so that a figure measured on a debug build is not taken for the daemon's.
        let build = ", debug build"
        #else
        let build = ""
        #endif
        print("sinkd \(SinkdVersion.version) (config schema v\(SinkdVersion.configSchema)\(build))")
    }
}

struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate a configuration file and summarise it.",
        discussion:
            "Exit 0 with a summary when the file is valid; exit 1 listing every error (FILE:LINE:COLUMN: KEY: MESSAGE) otherwise."
    )

    @OptionGroup var options: ConfigOption

    func run() throws {
        let config = try options.load()
        print(ConfigSummary.render(config))
    }
}

enum Terminal {
    static func printError(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }
}
