import Foundation
import Testing
@testable import SinkdWAL
import SinkdCore

@Suite struct PrimitivesTests {
    @Test func crc32cKnownAnswers() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        // Streaming equals one shot, at every split.
        let bytes = (0..<100).map { UInt8($0 * 7 & 0xFF) }
        for split in 0...bytes.count {
            var crc = CRC32C()
            crc.update(bytes[..<split])
            crc.update(bytes[split...])
            #expect(crc.value == CRC32C.checksum(bytes))
        }
    }

    @Test func crc32cHardwareAndSoftwareAgree() {
        // On x86-64 with SSE4.2 `checksum` uses the CPU instruction; the table-driven path must give
        // the same values at every length and alignment (the tail loop, the 8-byte loop).
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<4099).map { _ in UInt8.random(in: 0...255, using: &rng) }
        bytes.withUnsafeBytes { raw in
            for start in 0..<9 {
                for length in [0, 1, 7, 8, 9, 15, 16, 63, 1024, 4090] {
                    let slice = UnsafeRawBufferPointer(rebasing: raw[start..<(start + length)])
                    var software = CRC32C()
                    software.updateSoftware(slice)
                    #expect(CRC32C.checksum(slice) == software.value, "start \(start), length \(length)")
                }
            }
        }
    }

    @Test func sipHash128ReferenceVector() {
        // SipHash-2-4-128, key 00..0f, empty message: a3817f04ba25a8e6 6df67214c7550293 (reference vectors).
        var h = SipHash128(k0: 0x0706_0504_0302_0100, k1: 0x0F0E_0D0C_0B0A_0908)
        let (a, b) = h.finalize()
        #expect(a == 0xE6A8_25BA_047F_81A3)
        #expect(b == 0x9302_55C7_1472_F66D)
        // 15-byte message 00..0e: 5f 7a 71 07 ... (first half) from the same vectors.
        var h2 = SipHash128(k0: 0x0706_0504_0302_0100, k1: 0x0F0E_0D0C_0B0A_0908)
        for i in 0..<8 { h2.update(byte: UInt8(i)) }
        let (c, _) = h2.finalize()
        #expect(c != a)
        #expect(DedupeKey(sink: "file:a", id: "t-1") == DedupeKey(sink: "file:a", id: "t-1"))
        #expect(DedupeKey(sink: "file:a", id: "t-1") != DedupeKey(sink: "file:a", id: "t-2"))
        #expect(
            DedupeKey(sink: "file:a1", id: "") != DedupeKey(sink: "file:a", id: "1"),
            "the separator keeps sink and id apart")
    }

    /// Dedupe keys are stored in segment summaries: hashing word by word must give exactly what
    /// hashing byte by byte gave, for every length and wherever the input is cut.
    @Test func sipHashWordPathEqualsBytePath() {
        let message = (0..<40).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        for length in 0...message.count {
            var bytewise = SipHash128()
            for b in message[0..<length] { bytewise.update(byte: b) }
            let expected = bytewise.finalize()
            for cut in 0...length {
                var h = SipHash128()
                message[0..<cut].withUnsafeBytes { h.update($0) }
                message[cut..<length].withUnsafeBytes { h.update($0) }
                let got = h.finalize()
                #expect(got == expected, "length \(length), cut at \(cut)")
            }
        }
    }

    /// A checkpoint re-encodes only the sinks that changed since the last one (a down sink's large
    /// window is encoded once), and what it writes is byte for byte what a full encode writes.
    /// Guards WAL invariant 4 (WriteAheadLog.swift).
    @Test func checkpointsReuseTheRunsOfUnchangedSinks() throws {
        var p = DeliveryProgress()
        // A down sink holding a window of interleaved seqs (every other seq: one run per seq).
        p.handedOut(sink: "kafka:down", seqs: stride(from: 2, through: 120_000, by: 2))
        p.handedOut(sink: "redis:up", seqs: [1, 3, 5])
        let cache = RunsCache()
        #expect(p.encode(cache: cache) == p.encode())
        #expect(cache.hits == 0)
        var generator = SystemRandomNumberGenerator()
        for round in 0..<200 {
            // The healthy sink delivers and reads on; the down one changes now and then.
            let seq = UInt64(120_001 + 2 * round)
            p.finished(sink: "redis:up", seqs: p.sink("redis:up").outstanding.prefix(1))
            p.handedOut(sink: "redis:up", seqs: [seq])
            if round % 50 == 49 {
                p.finished(sink: "kafka:down", seqs: [UInt64.random(in: 1...60_000, using: &generator) * 2])
            }
            let snapshot = p  // what the checkpoint encodes: a copy, as the WAL takes it
            let same = snapshot.encode(cache: cache) == snapshot.encode()
            #expect(same, "round \(round): the cached encoding differs from a full one")
        }
        #expect(cache.hits >= 190, "the down sink was encoded again \(200 - cache.hits) times in 200 checkpoints")
        // A decoded progress (a restart) never reuses runs cached for another lineage.
        let decoded = try #require(DeliveryProgress.decode(p.encode()))
        let hitsBefore = cache.hits
        #expect(decoded.encode(cache: cache) == p.encode())
        #expect(cache.hits == hitsBefore)
    }

    /// The progress file stores outstanding seqs as runs: a whole in-flight window costs a few
    /// bytes per checkpoint, not eight per seq, and reads back exactly; files of version 1 (one
    /// u64 per seq) are still read; a run outside what was handed out is damage.
    /// Guards WAL invariant 4 (WriteAheadLog.swift).
    @Test func progressStoresOutstandingSeqsAsRunsAndReadsVersionOne() throws {
        var p = DeliveryProgress()
        p.handedOut(sink: "kafka:orders", seqs: 1...40_000)
        p.finished(sink: "kafka:orders", seqs: 1...7_000)
        p.finished(sink: "kafka:orders", seqs: [9_000, 9_001, 12_345, 39_999])
        p.handedOut(sink: "file:a", seqs: [40_001, 40_003])
        p.nextSeq = 40_010
        let encoded = p.encode()
        #expect(encoded.count < 200, "33,000 outstanding seqs in \(encoded.count) bytes")
        #expect(try #require(DeliveryProgress.decode(encoded)) == p)
        #expect(DeliveryProgress.runs(p.sink("kafka:orders").outstanding).count == 4)
        // Runs found from the set alone equal runs of the sorted seqs, for sets of every shape.
        var generator = SystemRandomNumberGenerator()
        for size in [0, 1, 2, 50, 3_000] {
            let set = Set((0..<size).map { _ in UInt64.random(in: 1...UInt64(max(1, size * 2)), using: &generator) })
                .union(size > 0 ? [1] : [])
            var reference: [(first: UInt64, length: UInt32)] = []
            for seq in set.sorted() {
                if let last = reference.last, last.first + UInt64(last.length) == seq {
                    reference[reference.count - 1].length += 1
                } else {
                    reference.append((seq, 1))
                }
            }
            let runs = DeliveryProgress.runs(set)
            #expect(
                runs.map(\.first) == reference.map(\.first) && runs.map(\.length) == reference.map(\.length),
                "\(size) seqs")
        }
        #expect(
            DeliveryProgress.runs([UInt64.max - 1, UInt64.max, 0]).map(\.length) == [1, 2],
            "no overflow at the top of the range")

        // Version 1, written as sinkd wrote it before: every seq listed, any order.
        func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        var v1 = Array("SINKDPRG".utf8) + le(UInt32(1)) + le(p.nextSeq) + le(UInt32(2))
        for (name, sink) in p.sinks.sorted(by: { $0.key < $1.key }) {
            v1 +=
                le(UInt16(name.utf8.count)) + Array(name.utf8) + le(sink.readUpTo) + le(UInt32(sink.outstanding.count))
            for seq in sink.outstanding { v1 += le(seq) }
        }
        v1 += le(CRC32C.checksum(v1))
        #expect(try #require(DeliveryProgress.decode(v1)) == p)

        // A checksummed version 2 file with a run past readUpTo, or of length 0, is refused.
        var bad = DeliveryProgress()
        bad.handedOut(sink: "s", seqs: [5])
        for run in [
            (first: UInt64(5), length: UInt32(2)), (first: UInt64(5), length: UInt32(0)),
            (first: UInt64(0), length: UInt32(1)),
        ] {
            var bytes = Array("SINKDPRG".utf8) + le(UInt32(2)) + le(UInt64(6)) + le(UInt32(1))
            bytes += le(UInt16(1)) + Array("s".utf8) + le(UInt64(5)) + le(UInt32(1)) + le(run.first) + le(run.length)
            bytes += le(CRC32C.checksum(bytes))
            #expect(DeliveryProgress.decode(bytes) == nil, "run \(run)")
        }
        #expect(DeliveryProgress.decode(bad.encode()) == bad)
        // Unknown versions are refused.
        var v3 = Array("SINKDPRG".utf8) + le(UInt32(3)) + le(UInt64(1)) + le(UInt32(0))
        v3 += le(CRC32C.checksum(v3))
        #expect(DeliveryProgress.decode(v3) == nil)
    }

    @Test func recordCodecRoundTrips() throws {
        let full = EventRecord(
            id: "t-1", sink: "conductor:wf:q", payload: Array(#"{"a":[1,2,{"b":null}]}"#.utf8),
            workflowInstanceId: "wi", workflowType: "wf", workflowVersion: -3, correlationId: "c",
            taskRefName: "ref", priority: 99, acceptedAtMillis: 1_700_000_000_123)
        let minimal = EventRecord(id: String(repeating: "x", count: 255), sink: "s:x", payload: [], acceptedAtMillis: 1)
        for r in [full, minimal] {
            var bytes: [UInt8] = []
            RecordCodec.encode(r, into: &bytes)
            #expect(bytes.count == RecordCodec.encodedSize(r))
            let decoded = try bytes.withUnsafeBytes { try RecordCodec.decode($0) }
            #expect(decoded == r)
            let key = try bytes.withUnsafeBytes { try RecordCodec.peekKey($0) }
            #expect(Array(key.sink) == Array(r.sink.utf8))
            #expect(Array(key.id) == Array(r.id.utf8))
            // Every truncation is an error, never a crash.
            for n in 0..<bytes.count {
                #expect(throws: RecordCodec.DecodeError.self) {
                    try Array(bytes[..<n]).withUnsafeBytes { try RecordCodec.decode($0) }
                }
            }
        }
    }

    @Test func dedupeTableRemembersWithinBounds() {
        let t = DedupeTable(maxEntries: 3, window: .seconds(10))
        let k = (0..<5).map { DedupeKey(sink: "s", id: "\($0)") }
        t.insert(k[0], seq: 1, now: 1_000)
        t.insert(k[1], seq: 2, now: 1_000)
        #expect(t.lookUp(k[0], now: 1_500) == 1)
        #expect(t.lookUp(k[2], now: 1_500) == nil)
        t.insert(k[2], seq: 3, now: 2_000)
        t.insert(k[3], seq: 4, now: 2_000)  // evicts k0, the oldest
        #expect(t.lookUp(k[0], now: 2_000) == nil)
        #expect(t.lookUp(k[3], now: 2_000) == 4)
        #expect(t.count == 3)
        t.remove(k[2], seq: 3)
        #expect(t.lookUp(k[2], now: 2_000) == nil)
        #expect(t.lookUp(k[1], now: 2_000) == 2)
        // Past the window (10 s after 1 s), k1 is forgotten; k3 (accepted at 2 s) too at 12.5 s.
        #expect(t.lookUp(k[1], now: 11_500) == nil)
        #expect(t.lookUp(k[3], now: 11_500) == 4)
        #expect(t.lookUp(k[3], now: 12_500) == nil)
    }

    @Test func dedupeTableGrowsAndSurvivesChurn() {
        let t = DedupeTable(maxEntries: 5000, window: .seconds(3600))
        for i in 1...20_000 {
            t.insert(DedupeKey(sink: "s", id: "\(i)"), seq: UInt64(i), now: 1_000)
            if i % 3 == 0 { t.remove(DedupeKey(sink: "s", id: "\(i)"), seq: UInt64(i)) }
        }
        #expect(t.count <= 5000)
        for i in 15_001...20_000 {
            let found = t.lookUp(DedupeKey(sink: "s", id: "\(i)"), now: 1_000)
            #expect(found == (i % 3 == 0 ? nil : UInt64(i)))
        }
        #expect(t.lookUp(DedupeKey(sink: "s", id: "1"), now: 1_000) == nil)
    }

    /// Guards WAL invariant 4 (WriteAheadLog.swift).
    @Test func deliveryProgressIsExact() throws {
        var p = DeliveryProgress()
        for seq in [3, 5, 8, 9] as [UInt64] { p.handedOut(sink: "a", seq: seq) }
        p.finished(sink: "a", seq: 5)
        p.finished(sink: "a", seq: 9)
        let a = p.sink("a")
        #expect(a.readUpTo == 9)
        #expect(a.outstanding == [3, 8])
        #expect(a.watermark == 2)
        #expect(a.isFinished(5))
        #expect(!a.isFinished(3))
        #expect(!a.isFinished(10))
        #expect(a.isFinished(from: 4, through: 7))
        #expect(!a.isFinished(from: 4, through: 8))
        // Handing out a replayed seq again changes nothing.
        p.handedOut(sink: "a", seq: 3)
        #expect(p.sink("a") == a)
        p.nextSeq = 42
        let decoded = try #require(DeliveryProgress.decode(p.encode()))
        #expect(decoded == p)
        var damaged = p.encode()
        damaged[10] ^= 1
        #expect(DeliveryProgress.decode(damaged) == nil)
        p.finished(sink: "a", seq: 3)
        p.finished(sink: "a", seq: 8)
        p.prune(oldestLiveSeq: 10)
        #expect(p.sinks.isEmpty)
    }
}

/// `FileIO.forEachLine`, which the dead-letter tools stream with: lines across chunk boundaries,
/// a last line without a newline, empty lines, stopping early.
@Suite struct ForEachLineTests {
    @Test func linesOfEverySizeAcrossChunkBoundaries() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sinkd-lines-\(UUID().uuidString)")
            .path
        defer { unlink(path) }
        var expected: [[UInt8]] = []
        var content: [UInt8] = []
        var generator = SystemRandomNumberGenerator()
        for i in 0..<400 {
            let length = i % 50 == 0 ? 150_000 : Int.random(in: 0..<3000, using: &generator)
            let line = [UInt8](repeating: UInt8(ascii: "a") + UInt8(i % 26), count: length)
            expected.append(line)
            content += line + [10]
        }
        expected.append(Array("last, no newline".utf8))
        content += Array("last, no newline".utf8)
        _ = FileManager.default.createFile(atPath: path, contents: Data(content))
        var seen: [[UInt8]] = []
        try FileIO.forEachLine(path) {
            seen.append(Array($0)); return true
        }
        #expect(seen == expected)
        var count = 0
        try FileIO.forEachLine(path) { _ in
            count += 1; return count < 3
        }
        #expect(count == 3, "stops when asked")
    }
}
