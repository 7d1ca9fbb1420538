import Foundation
import Logging
import NIOPosix
import SinkdCore
@testable import SinkdIngest
@testable import SinkdWAL

/// A real ingest listener on a Unix socket in a temporary directory, over a real WAL.
final class IngestHarness: @unchecked Sendable {
    let directory: String
    var config: SinkdConfig
    let wal: WriteAheadLog
    let service: IngestService
    let state = ServerState()
    var socketPath: String { config.ingest.socket }

    init(_ configure: (inout SinkdConfig) -> Void = { _ in }) async throws {
        directory =
            FileManager.default.temporaryDirectory.appendingPathComponent("sinkd-ingest-\(UUID().uuidString.prefix(8))")
            .path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var config = SinkdConfig()
        config.sourcePath = "test.yaml"
        config.ingest.socket = directory + "/ingest.sock"
        config.wal.directory = directory + "/wal"
        config.sinks.file = FileSinkConfig()
        config.sinks.file?.directory = directory + "/outbox"
        configure(&config)
        self.config = config
        var logger = Logger(label: "sinkd.test.ingest")
        logger.logLevel = .critical
        wal = try WriteAheadLog(options: WALOptions(config), logger: logger)
        wal.start()
        service = IngestService(
            shared: IngestContext(wal: wal, config: config, logger: logger, state: state), config: config.ingest,
            source: .path(config.ingest.socket, mode: config.ingest.socketMode),
            group: MultiThreadedEventLoopGroup.singleton)
        try await service.bind()
    }

    func stop() async {
        await service.shutDown()
        wal.shutdown()
        try? FileManager.default.removeItem(atPath: directory)
    }

    func client() throws -> IngestClient {
        try IngestClient(path: socketPath)
    }
}

extension IngestClient {
    func send(_ lines: [String]) {
        write(Array(lines.map { $0 + "\n" }.joined().utf8))
    }

    /// Reads `count` response lines as strings (fails the read after 10 s of silence).
    func responses(_ count: Int) -> [String] {
        var out: [String] = []
        while out.count < count, let line = readLine(timeoutMillis: 10_000) {
            out.append(String(decoding: line, as: UTF8.self))
        }
        return out
    }

    /// Parsed response objects.
    func responseObjects(_ count: Int) -> [[String: Any]] {
        responses(count).map { (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) ?? [:] }
    }
}

func line(_ id: String, sink: String = "file:events", payload: String = #"{"n":1}"#) -> String {
    #"{"id":"\#(id)","sink":"\#(sink)","payload":\#(payload)}"#
}
