import ArgumentParser
import SinkdCore

/// `sinkd reload`: what systemd's ExecReload runs (systemd 252 has no Type=notify-reload).
struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask the running daemon to reload its configuration, and wait for the outcome.",
        discussion: """
            Same as SIGHUP, but waits: exit 0 once the new configuration is applied (warnings, such \
            as settings that need a restart, go to stderr); 1 when it is rejected (each error is \
            printed; sinkd keeps running on the old configuration); 2 if sinkd cannot be reached.
            """
    )

    @OptionGroup var config: ConfigOption

    func run() throws {
        // The daemon reads the file and decides; an invalid file must reach it too (it logs the
        // errors and shows the failure in STATUS=), so only the control socket is read here.
        let socket = ConfigLoader.controlSocket(path: config.path)
        let response: [String: Any]
        do {
            response = try Control.exchange(["command": "reload"], socket: socket)
        } catch {
            Terminal.printError("sinkd reload: \(error)")
            throw ExitCode(2)
        }
        let generation = response["generation"] as? Int ?? 0
        if response["ok"] as? Bool == true {
            for warning in response["warnings"] as? [String] ?? [] { Terminal.printError("warning: \(warning)") }
            print("configuration reloaded (generation \(generation))")
            return
        }
        for error in response["errors"] as? [String] ?? [] { Terminal.printError(error) }
        Terminal.printError(
            "sinkd reload: \(response["error"] as? String ?? "refused"); still running generation \(generation)")
        throw ExitCode(1)
    }
}
