import Foundation
import Testing
import SinkdCore
@testable import SinkdWAL

#if canImport(Glibc)
import Glibc
import SinkdTestSupport
#endif

/// The WAL on a real filesystem that fills up: a 4 MiB tmpfs mounted for the test (CI runs as
/// root; without root the test fails rather than skips).
@Suite(.serialized, .blockingThreads) struct DiskFullTests {
    final class SmallFilesystem {
        let path: String

        init(megabytes: Int) throws {
            path =
                FileManager.default.temporaryDirectory.appendingPathComponent(
                    "sinkd-full-\(UUID().uuidString.prefix(8))"
                ).path
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            let mount = Process()
            mount.executableURL = URL(fileURLWithPath: "/bin/mount")
            mount.arguments = ["-t", "tmpfs", "-o", "size=\(megabytes)m", "tmpfs", path]
            try mount.run()
            mount.waitUntilExit()
            guard mount.terminationStatus == 0 else {
                throw FileError(operation: "mount tmpfs (this test needs root)", path: path, errno: EPERM)
            }
        }

        deinit {
            let umount = Process()
            umount.executableURL = URL(fileURLWithPath: "/bin/umount")
            umount.arguments = ["-l", path]
            try? umount.run()
            umount.waitUntilExit()
            try? FileManager.default.removeItem(atPath: path)
        }

        /// Fills the filesystem with a file of `bytes` (or until it is full).
        func fill(_ name: String, bytes: Int) {
            let fd = open(path + "/" + name, O_WRONLY | O_CREAT, 0o600)
            defer { close(fd) }
            let chunk = [UInt8](repeating: 0xAB, count: 64 << 10)
            var written = 0
            while written < bytes {
                let n = chunk.withUnsafeBytes { write(fd, $0.baseAddress!, min($0.count, bytes - written)) }
                if n <= 0 { return }
                written += n
            }
        }
    }

    static let payload = "\"" + String(repeating: "z", count: 4000) + "\""

    /// Guards WAL invariants 1 and 2 (WriteAheadLog.swift).
    @Test func rejectModeAnswersNoSpaceThenRecovers() throws {
        let fs = try SmallFilesystem(megabytes: 4)
        let t = try TestWAL(segmentSize: 1 << 20, maxSize: 1 << 30, whenFull: .reject, directory: fs.path + "/wal")
        fs.fill("ballast", bytes: 3 << 20)
        var accepted: [String] = []
        var sawNoSpace = false
        for i in 0..<400 {
            let (outcomes, ticket) = t.wal.append(
                [record("r\(i)", payload: Self.payload)], nowMillis: WallClock.millis())
            switch t.wait(ticket) {
            case .success:
                if case .accepted = outcomes[0] { accepted.append("r\(i)") }
            case .failure(let error):
                #expect(error.isNoSpace)
                sawNoSpace = true
            }
            if sawNoSpace { break }
        }
        #expect(sawNoSpace, "the filesystem filled up")
        // Space returns: appends succeed again, on a fresh segment.
        try FileManager.default.removeItem(atPath: fs.path + "/ballast")
        try t.append([record("after", payload: Self.payload)])
        try t.restart()
        let ids = try readAll(t.wal, sink: "file:a").map(\.record.id)
        #expect(ids == accepted + ["after"], "every acknowledged record, nothing that was refused")
    }

    /// Guards WAL invariants 1 and 2 (WriteAheadLog.swift).
    @Test func blockModeHoldsAcknowledgementsUntilSpaceReturns() throws {
        let fs = try SmallFilesystem(megabytes: 4)
        let t = try TestWAL(segmentSize: 1 << 20, maxSize: 1 << 30, whenFull: .block, directory: fs.path + "/wal")
        fs.fill("ballast", bytes: 4 << 20)
        let (outcomes, ticket) = t.wal.append(
            (0..<50).map { record("b\($0)", payload: Self.payload) }, nowMillis: WallClock.millis())
        #expect(outcomes.count == 50)
        let done = DispatchSemaphore(value: 0)
        let box = ResultBox()
        t.wal.whenDurable(ticket) { result in
            box.result = result
            done.signal()
        }
        #expect(
            done.wait(timeout: .now() + .milliseconds(500)) == .timedOut, "nothing acknowledged while the disk is full")
        try FileManager.default.removeItem(atPath: fs.path + "/ballast")
        #expect(done.wait(timeout: .now() + .seconds(10)) == .success)
        #expect(box.result.map { (try? $0.get()) != nil } == true)
        try t.restart()
        #expect(try readAll(t.wal, sink: "file:a").count == 50)
    }

    @Test func readOnlyDirectoryAtStartIsAClearError() throws {
        let fs = try SmallFilesystem(megabytes: 1)
        let remount = Process()
        remount.executableURL = URL(fileURLWithPath: "/bin/mount")
        remount.arguments = ["-o", "remount,ro", fs.path]
        try remount.run()
        remount.waitUntilExit()
        var config = SinkdConfig()
        config.wal.directory = fs.path + "/wal"
        #expect(throws: FileError.self) {
            _ = try WriteAheadLog(options: WALOptions(config), logger: TestWAL.logger)
        }
    }
}
