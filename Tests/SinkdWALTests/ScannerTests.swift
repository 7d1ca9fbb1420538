import Testing
import SinkdTestSupport
@testable import SinkdWAL
import SinkdCore

/// Byte-level fixtures: frames built by hand, then damaged.
@Suite struct ScannerTests {
    static func frame(seq: UInt64, body: [UInt8]) -> [UInt8] {
        var crc = CRC32C()
        crc.update(body)
        var out: [UInt8] = []
        SegmentFormat.appendFrame(seq: seq, body: body, bodyCRC: crc, to: &out)
        return out
    }

    static func segment(_ seqs: [UInt64], bodySize: Int = 40) -> (bytes: [UInt8], frameStarts: [Int]) {
        var bytes = SegmentFormat.header()
        var starts: [Int] = []
        for seq in seqs {
            starts.append(bytes.count)
            bytes += frame(seq: seq, body: (0..<bodySize).map { UInt8((Int(seq) + $0) & 0xFF) })
        }
        return (bytes, starts)
    }

    static func events(_ bytes: [UInt8]) throws -> [ScanEvent] {
        var scanner = SegmentScanner(source: MemorySegment(bytes), maxBody: 1 << 20)
        var out: [ScanEvent] = []
        while true {
            let e = try scanner.next()
            out.append(e)
            if case .end = e { return out }
            if case .tornTail = e { return out }
        }
    }

    static func seqs(_ events: [ScanEvent]) -> [UInt64] {
        events.compactMap { if case .record(let seq, _, _, _) = $0 { seq } else { nil } }
    }

    @Test func readsValidFrames() throws {
        let (bytes, _) = Self.segment([1, 2, 5])
        let e = try Self.events(bytes)
        #expect(Self.seqs(e) == [1, 2, 5])
        #expect(e.last == .end(offset: bytes.count))
    }

    /// Guards WAL invariant 6 (WriteAheadLog.swift).
    @Test func tornTailAtEveryOffsetOfTheLastFrame() throws {
        let (bytes, starts) = Self.segment([1, 2, 3])
        for cut in starts[2]..<bytes.count {
            let e = try Self.events(Array(bytes[..<cut]))
            #expect(Self.seqs(e) == [1, 2], "cut at \(cut)")
            if cut == starts[2] {
                #expect(e.last == .end(offset: cut))
            } else {
                #expect(e.last == .tornTail(offset: starts[2], length: cut - starts[2]), "cut at \(cut)")
            }
        }
    }

    /// Guards WAL invariant 6 (WriteAheadLog.swift).
    @Test func bitFlipInABodySkipsOneRecord() throws {
        var (bytes, starts) = Self.segment([1, 2, 3, 4])
        bytes[starts[1] + 20] ^= 0x10
        let e = try Self.events(bytes)
        #expect(Self.seqs(e) == [1, 3, 4])
        #expect(e.contains(.corrupt(offset: starts[1], length: starts[2] - starts[1])))
    }

    /// Guards WAL invariant 6 (WriteAheadLog.swift).
    @Test func damagedLengthResynchronises() throws {
        var (bytes, starts) = Self.segment([1, 2, 3, 4])
        bytes[starts[1] + 1] ^= 0x7F  // length now huge
        let e = try Self.events(bytes)
        #expect(Self.seqs(e) == [1, 3, 4])
    }

    /// Guards WAL invariant 6 (WriteAheadLog.swift).
    @Test func bitFlipsAnywhereNeverCrashAndKeepOtherRecords() throws {
        let (clean, starts) = Self.segment(Array(1...6), bodySize: 24)
        for position in SegmentFormat.headerSize..<clean.count {
            for bit in [0, 3, 7] {
                var bytes = clean
                bytes[position] ^= UInt8(1 << bit)
                let found = Self.seqs(try Self.events(bytes))
                let damagedFrame = starts.lastIndex(where: { $0 <= position })!
                let expected = (1...6).map(UInt64.init).filter { $0 != UInt64(damagedFrame + 1) }
                #expect(found == expected, "flip at \(position) bit \(bit)")
            }
        }
    }

    /// Guards WAL invariant 6 (WriteAheadLog.swift).
    @Test func zeroFilledTailIsTorn() throws {
        let (bytes, _) = Self.segment([1, 2])
        let e = try Self.events(bytes + [UInt8](repeating: 0, count: 4096))
        #expect(Self.seqs(e) == [1, 2])
        #expect(e.last == .tornTail(offset: bytes.count, length: 4096))
    }
}

@Suite struct ResyncCostTests {
    /// Garbage in front of many frames: the scanner reads each byte a bounded number of times,
    /// however much garbage (the old resync re-read a 256 KiB window per garbage byte).
    /// Guards WAL invariants 5 and 6 (WriteAheadLog.swift).
    @Test(arguments: [16 << 10, 128 << 10])
    func resynchronisingIsLinear(_ garbageBytes: Int) throws {
        var generator = SeededGenerator(seed: 0x5eed)
        var bytes = SegmentFormat.header()
        for _ in 0..<garbageBytes { bytes.append(UInt8.random(in: 0...255, using: &generator)) }
        var frames: [UInt8] = []
        var seq: UInt64 = 1000
        while frames.count < 4 << 20 {
            var body: [UInt8] = []
            RecordCodec.encode(
                EventRecord(
                    id: "r\(seq)", sink: "file:a",
                    payload: Array(#"{"pad":"\#(String(repeating: "x", count: 900))"}"#.utf8)), into: &body)
            var crc = CRC32C()
            crc.update(body)
            SegmentFormat.appendFrame(seq: seq, body: body, bodyCRC: crc, to: &frames)
            seq += 1
        }
        bytes += frames
        var scanner = SegmentScanner(source: MemorySegment(bytes), maxBody: 64 << 20, nearSeq: 1000)
        var records = 0
        var corrupt = 0
        loop: while true {
            switch try scanner.next() {
            case .record: records += 1
            case .corrupt: corrupt += 1
            case .tornTail: Issue.record("no torn tail expected")
            case .end: break loop
            }
        }
        #expect(records == Int(seq - 1000))
        #expect(corrupt == 1)
        #expect(
            scanner.bytesRead <= 3 * bytes.count, "read \(scanner.bytesRead) bytes for a \(bytes.count)-byte segment")
    }
}
