import Foundation
import Testing
import SinkdIngest
import SinkdWAL
import SinkdTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The promise: every record answered `accepted` is delivered (to the file sink) or still in the
/// WAL after the daemon is killed with SIGKILL at random moments while a client streams records
/// and restarted each time.
@Suite(.serialized, .blockingThreads) struct CrashDurabilityTests {
    @Test func sigkillAtRandomMomentsLosesNoAcknowledgedRecord() throws {
        let seed =
            ProcessInfo.processInfo.environment["SINKD_TEST_SEED"].flatMap(UInt64.init)
            ?? UInt64.random(in: 1...UInt64(UInt32.max))
        print("crash test seed: \(seed) (rerun with SINKD_TEST_SEED=\(seed))")
        var rng = SeededGenerator(seed: seed)
        let dir = try TemporaryDirectory()
        let config = try dir.write(
            "sinkd.yaml",
            """
            ingest: {socket: \(dir.path)/ingest.sock, max_record_bytes: 64KiB}
            control: {socket: \(dir.path)/control.sock}
            wal: {directory: \(dir.path)/wal, segment_size: 256KiB, max_size: 1GiB}
            log: {level: warning, format: logfmt}
            sinks: {file: {directory: \(dir.path)/outbox}}
            """)
        let accepted = LockedIDs()
        let iterations = 20
        for iteration in 0..<iterations {
            let daemon = try Daemon.start(config: config, log: dir.path + "/sinkd.log")
            let client = try daemon.connect(socket: dir.path + "/ingest.sock")
            let stop = LockedFlag()
            let payloadSize = Int.random(in: 10...3000, using: &rng)
            BlockingThread.detach {
                var n = 0
                while !stop.isSet {
                    var chunk: [UInt8] = []
                    for _ in 0..<50 {
                        chunk += Array(
                            #"{"id":"i\#(iteration)-\#(n)","sink":"file:crash","payload":{"id":"i\#(iteration)-\#(n)","pad":"\#(String(repeating: "p", count: payloadSize))"}}"#
                                .utf8)
                        chunk.append(UInt8(ascii: "\n"))
                        n += 1
                    }
                    if !client.write(chunk) { return }
                }
            }
            // The kill window starts at the first acceptance, so that every run is killed
            // mid-stream however slow this sinkd is (a sanitized build is 5-15 times slower).
            let killAfter = Double.random(in: 0.05...0.4, using: &rng)
            let firstDeadline = Date().addingTimeInterval(30)
            var started = false
            while !started, Date() < firstDeadline {
                if let line = client.readLine(timeoutMillis: 100), let id = Self.acceptedID(line) {
                    accepted.insert(id)
                    started = true
                }
            }
            #expect(started, "run \(iteration): nothing accepted within 30 s")
            let deadline = Date().addingTimeInterval(killAfter)
            while Date() < deadline {
                if let line = client.readLine(timeoutMillis: 100), let id = Self.acceptedID(line) {
                    accepted.insert(id)
                }
            }
            kill(daemon.process.processIdentifier, SIGKILL)
            // Responses already in our receive buffer were sent before the kill: they count too.
            while let line = client.readLine(timeoutMillis: 1000) {
                if let id = Self.acceptedID(line) { accepted.insert(id) }
            }
            stop.set()
            daemon.process.waitUntilExit()
        }
        // One more start recovers whatever the last kill left, then a clean stop.
        let last = try Daemon.start(config: config, log: dir.path + "/sinkd.log")
        _ = try last.connect(socket: dir.path + "/ingest.sock")
        last.process.terminate()
        last.process.waitUntilExit()
        #expect(last.process.terminationStatus == 0)

        // Every accepted record is either delivered (a line in the outbox) or still in the WAL.
        var inWAL = Set<String>()
        let reports = try WALInspector.inspect(directory: dir.path + "/wal") { inWAL.insert($0.record.id) }
        var delivered: [String: Int] = [:]
        let outbox = (try? Data(contentsOf: URL(fileURLWithPath: dir.path + "/outbox/crash.ndjson"))) ?? Data()
        for line in outbox.split(separator: UInt8(ascii: "\n")) {
            if let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
                let id = object["id"] as? String
            {
                delivered[id, default: 0] += 1
            }
        }
        let lost = accepted.all.subtracting(inWAL).subtracting(delivered.keys)
        let duplicates = delivered.values.filter { $0 > 1 }.count
        print(
            "crash test: \(iterations) SIGKILLs, \(accepted.all.count) records accepted, \(delivered.count) delivered (\(duplicates) more than once), \(inWAL.count) in the WAL, \(lost.count) lost"
        )
        #expect(accepted.all.count >= iterations, "every run was killed mid-stream")
        #expect(lost.isEmpty, "lost \(lost.count) acknowledged records, e.g. \(lost.prefix(5)) (seed \(seed))")
        #expect(reports.allSatisfy { $0.corrupt.isEmpty && $0.unreadable == nil }, "recovery left no damaged segment")
    }

    static func acceptedID(_ line: [UInt8]) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
            object["status"] as? String == "accepted"
        else { return nil }
        return object["id"] as? String
    }

    /// `sinkd run` as a child process, started once its socket accepts.
    struct Daemon {
        let process: Process
        let log: String

        /// `launcher` runs sinkd through another program (e.g. systemd-socket-activate and its
        /// options); `environment` adds variables.
        static func start(
            config: String, log: String, environment: [String: String] = [:], launcher: [String] = []
        ) throws -> Daemon {
            let process = Process()
            if launcher.isEmpty {
                process.executableURL = SinkdProcess.executable
                process.arguments = ["run", "--config", config]
            } else {
                process.executableURL = URL(fileURLWithPath: launcher[0])
                process.arguments =
                    Array(launcher.dropFirst()) + [SinkdProcess.executable.path, "run", "--config", config]
            }
            if !environment.isEmpty {
                var env = ProcessInfo.processInfo.environment
                for (k, v) in environment { env[k] = v }
                process.environment = env
            }
            process.standardOutput = FileHandle.nullDevice
            if !FileManager.default.fileExists(atPath: log) {
                _ = FileManager.default.createFile(atPath: log, contents: nil)
            }
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            handle.seekToEndOfFile()
            process.standardError = handle
            try process.run()
            return Daemon(process: process, log: log)
        }

        /// SIGTERM and wait, if it still runs (for `defer`).
        func stopIfRunning() {
            guard process.isRunning else { return }
            process.terminate()
            process.waitUntilExit()
        }

        func connect(socket: String) throws -> IngestClient {
            let deadline = Date().addingTimeInterval(20)
            while true {
                if let client = try? IngestClient(path: socket) { return client }
                guard Date() < deadline, process.isRunning else {
                    let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                    throw IngestClient.Failure(
                        description: "sinkd did not start listening on \(socket); its log ends:\n\(output.suffix(2000))"
                    )
                }
                usleep(10_000)
            }
        }
    }
}

final class LockedIDs: @unchecked Sendable {
    private let lock = NSLock()
    private var ids = Set<String>()
    func insert(_ id: String) { lock.withLock { _ = ids.insert(id) } }
    var all: Set<String> { lock.withLock { ids } }
}

final class LockedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}
