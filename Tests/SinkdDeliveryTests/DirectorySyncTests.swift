import Foundation
import Testing
import SinkdCore
@testable import SinkdDelivery
import SinkdWAL
import SinkdTestSupport

/// A new dead-letter file is durable in its directory before the store reports the entry
/// written (the WAL then counts the record as finished): the directory's fsync is performed, and
/// its failure is the store's failure. Shown with the fault seam on the directory's fsync.
@Suite(.serialized, .blockingThreads) struct DirectorySyncTests {
    @Test func aNewDeadLetterFileIsSyncedInItsDirectory() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sinkd-dlq-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try DeadLetterStore(directory: dir)
        let entry = DeadLetterStore.Entry(
            seq: 1, record: EventRecord(id: "x", sink: "file:a", payload: Array("1".utf8)), error: "e", attempts: 1,
            firstAttemptMillis: nil, lastAttemptMillis: nil, deadLetteredMillis: 1)
        FaultInjector.shared.arm(.directorySync, errno: EIO, under: dir)
        defer { FaultInjector.shared.disarm(under: dir) }
        #expect(throws: FileError.self) { try store.append(sink: "file:a", [entry]) }
        // Nothing was written by the failed append; the file now exists, and the next append to
        // it needs no directory sync.
        try store.append(sink: "file:a", [entry])
        #expect(try store.entries().count == 1)
    }

    @Test func deadLetterAppendsNeverFollowAPlantedLink() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sinkd-dlq-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try DeadLetterStore(directory: dir)
        let victim = dir + "-victim"
        _ = FileManager.default.createFile(atPath: victim, contents: Data("keep".utf8))
        defer { try? FileManager.default.removeItem(atPath: victim) }
        try FileManager.default.createSymbolicLink(
            atPath: dir + "/" + DeadLetterStore.fileName(for: "file:a"), withDestinationPath: victim)
        let entry = DeadLetterStore.Entry(
            seq: 1, record: EventRecord(id: "x", sink: "file:a", payload: Array("1".utf8)), error: "e", attempts: 1,
            firstAttemptMillis: nil, lastAttemptMillis: nil, deadLetteredMillis: 1)
        #expect(throws: FileError.self) { try store.append(sink: "file:a", [entry]) }
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "keep")
    }
}
