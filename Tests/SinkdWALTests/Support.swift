import Foundation
import Logging
import SinkdCore
@testable import SinkdWAL

/// A WAL in a fresh temporary directory, with helpers that wait for durability.
final class TestWAL {
    let directory: String
    var options: WALOptions
    private(set) var wal: WriteAheadLog!
    let ownsDirectory: Bool

    init(
        segmentSize: Int = 1 << 20, maxSize: Int = 64 << 20, whenFull: WhenFull = .block, fsync: FsyncMode = .always,
        directory: String? = nil
    ) throws {
        ownsDirectory = directory == nil
        self.directory =
            directory
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("sinkd-wal-\(UUID().uuidString)").path
        var config = SinkdConfig()
        config.wal.directory = self.directory
        config.wal.segmentSize = segmentSize
        config.wal.maxSize = maxSize
        config.wal.whenFull = whenFull
        config.wal.fsync = fsync
        options = WALOptions(config)
        options.checkpointInterval = .milliseconds(20)
        try open()
    }

    deinit {
        wal?.shutdown()
        if ownsDirectory || removeOnDeinit { try? FileManager.default.removeItem(atPath: directory) }
    }

    static let logger: Logger = {
        var l = Logger(label: "sinkd.test.wal")
        l.logLevel = .critical
        return l
    }()

    func open() throws {
        // The directory's flock belongs to an open file description: a child another test spawns
        // at that moment (posix_spawn: every descriptor until its exec closes the O_CLOEXEC ones)
        // briefly holds it too, so a reopen right after a shutdown can find the lock still taken,
        // by this very process (seen once in CI, with the whole suite spawning servers in
        // parallel). That, and only that, is waited out; another holder fails at once.
        let deadline = Date().addingTimeInterval(5)
        while true {
            do {
                wal = try WriteAheadLog(options: options, logger: Self.logger)
                break
            } catch {
                let ownLock = error.operation == "lock" && error.detail?.contains("(pid \(getpid()))") == true
                guard ownLock, Date() < deadline else { throw error }
                usleep(10_000)
            }
        }
        wal.start()
    }

    /// Shuts down cleanly and opens again (a restart).
    func restart() throws {
        wal.shutdown()
        wal = nil
        try open()
    }

    /// What a crash at this instant leaves: a copy of the directory as it is on disk now, opened
    /// by a new WAL (the original keeps running until the test ends). Call with no append in flight.
    func crashCopy() throws -> TestWAL {
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("sinkd-wal-\(UUID().uuidString)").path
        try Self.copyAsACrashSeesIt(directory, to: copy)
        let other = try TestWAL(
            segmentSize: options.segmentSize, maxSize: options.maxSize, whenFull: options.whenFull,
            fsync: options.fsync, directory: copy)
        other.removeOnDeinit = true
        return other
    }

    /// Copies `source` file by file in name order (segments oldest first, the direction records
    /// move when a segment is rewritten), the writer running meanwhile. A file that vanishes
    /// between the listing and its copy was deleted (a finished segment, a temporary file renamed
    /// into place): a crash after that deletion would not find it either. FileManager's copy of
    /// the whole directory failed there instead (a local run of FaultAtEveryStepTests: "The file doesn't
    /// exist" for a segment the checkpoint had just deleted).
    static func copyAsACrashSeesIt(_ source: String, to destination: String) throws {
        try FileManager.default.createDirectory(atPath: destination, withIntermediateDirectories: false)
        for name in try FileManager.default.contentsOfDirectory(atPath: source).sorted() {
            let from = source + "/" + name, to = destination + "/" + name
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: from, isDirectory: &isDirectory) else { continue }
            if isDirectory.boolValue {
                do {
                    try copyAsACrashSeesIt(from, to: to)
                } catch let error as CocoaError
                    where error.code == .fileNoSuchFile || error.code == .fileReadNoSuchFile
                {
                    continue
                }
            } else {
                // The bytes there now, read to their end, not FileManager.copyItem: its sendfile
                // loop spins forever on a file that shrinks while it copies (the writer cutting a
                // failed round off the active segment: a hung FaultAtEveryStepTests in CI).
                guard let bytes = FileManager.default.contents(atPath: from) else { continue }
                guard FileManager.default.createFile(atPath: to, contents: bytes) else {
                    throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: to])
                }
            }
        }
    }

    var removeOnDeinit = false

    @discardableResult
    func append(_ records: [EventRecord], now: UInt64 = WallClock.millis()) throws -> [AppendOutcome] {
        let (outcomes, ticket) = wal.append(records, nowMillis: now)
        let result = wait(ticket)
        try result.get()
        return outcomes
    }

    func wait(_ ticket: AppendTicket) -> Result<Void, WALWriteError> {
        let done = DispatchSemaphore(value: 0)
        let box = ResultBox()
        wal.whenDurable(ticket) { result in
            box.result = result
            done.signal()
        }
        done.wait()
        return box.result!
    }

    func files() -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: directory).sorted()) ?? []
    }

    func segmentFiles() -> [String] { files().filter { $0.hasSuffix(".wal") } }
}

final class ResultBox: @unchecked Sendable {
    var result: Result<Void, WALWriteError>?
}

func record(_ id: String, sink: String = "file:a", payload: String = #"{"n":1}"#) -> EventRecord {
    EventRecord(id: id, sink: sink, payload: Array(payload.utf8))
}

/// Reads every unfinished record of `sink` from a fresh reader.
func readAll(_ wal: WriteAheadLog, sink: String) throws -> [SequencedRecord] {
    let reader = wal.reader(for: sink)
    var out: [SequencedRecord] = []
    while true {
        let batch = try reader.next(maxRecords: 1000)
        if batch.isEmpty { return out }
        out += batch
    }
}
