import Foundation
import SinkdIngest

#if canImport(Glibc)
import Glibc
#endif
import SinkdTestServers

/// The Kafka tests' broker: SinkdTestServers' launcher (Tansu on 127.0.0.1) with the proxies the
/// fault tests put in front of it (Fixtures/*.py).
typealias TansuServer = TansuProcess

extension TansuProcess {
    /// SIGKILL, then reaped (a proxy fixture).
    static func kill(_ p: Process) { ServerProcess.kill(p) }

    /// Cuts the connection when the `cutAt`-th Produce answer comes back (cut_proxy.py).
    func startCutProxy(cutAt: Int = 1, output: String? = nil) throws -> Process {
        try startProxy("cut_proxy.py", ["\(cutAt)"], output: output)
    }

    /// A proxy fixture listening on `advertisedPort` in front of the broker; its stdout (one line
    /// per event) goes to `output` when given. Returns once it listens.
    func startProxy(_ script: String, _ arguments: [String], output: String? = nil) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments =
            ["python3", Python.fixtures.appendingPathComponent(script).path, "\(advertisedPort)", "\(port)"] + arguments
        if let output {
            _ = FileManager.default.createFile(atPath: output, contents: nil)
            p.standardOutput = FileHandle(forWritingAtPath: output)
        } else {
            p.standardOutput = FileHandle.nullDevice
        }
        p.standardError = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(10)
        while !LoopbackTCP.canConnect(port: advertisedPort) {
            guard p.isRunning, Date() < deadline else {
                throw TestServerFailure("\(script) did not listen on \(advertisedPort)")
            }
            usleep(20_000)
        }
        return p
    }
}

extension Python {
    /// The Kafka tests' Python peers and fixtures (Fixtures/*.py).
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
}
