import SinkdAMQPSink
import SinkdCore
import SinkdIngest
import SinkdNATSSink
import SinkdWAL

/// What the fuzzer feeds untrusted bytes to: everything sinkd parses from a client, a file or a
/// broker. Each target must return (or throw a typed error) for every input: a crash, a trap or a
/// sanitizer report is a bug. Where a parser has an inverse, the target also checks the round trip.
///
/// Built with libFuzzer by scripts/fuzz (`sinkd-fuzz`); the committed corpora (Fuzz/corpus/TARGET)
/// are replayed by the normal test suite, so every crash once found stays a regression test.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// An ingest request line (RequestParser).
    case requestParser = "request-parser"
    /// A sink as the engine evaluated it (SinkAddress.parse), and its identity read back.
    case sinkAddress = "sink-address"
    /// A configuration file (ConfigLoader.parse: YAML, then every key).
    case config
    /// A WAL segment (SegmentScanner over the bytes, RecordCodec on every valid frame), and the
    /// progress and segment-summary files.
    case walSegment = "wal-segment"
    /// Bytes from an AMQP broker (AMQPFrameDecoder).
    case amqpFrame = "amqp-frame"
    /// Bytes from a NATS server (NATSParser).
    case natsParser = "nats-parser"

    public func run(_ data: UnsafeRawBufferPointer) {
        switch self {
        case .requestParser:
            _ = RequestParser.parse(data)
        case .sinkAddress:
            let text = String(decoding: data, as: UTF8.self)
            guard let address = try? SinkAddress.parse(text, workflowType: "wf", taskRefName: "task") else { return }
            // What ingest stores (the identity) must parse back to the same sink.
            guard let again = try? SinkAddress.parse(identity: address.identity) else {
                fatalError("sink-address: identity '\(address.identity)' of '\(text)' does not parse back")
            }
            precondition(again.identity == address.identity, "sink-address: identity changes on a second parse: '\(address.identity)' → '\(again.identity)'")
        case .config:
            _ = try? ConfigLoader.parse(yaml: String(decoding: data, as: UTF8.self), file: "fuzz.yaml", environment: [:], workingDirectory: "/")
        case .walSegment:
            let bytes = Array(data)
            var scanner = SegmentScanner(source: MemorySegment(bytes), maxBody: 1 << 20)
            var steps = 0
            while let event = try? scanner.next() {
                steps += 1
                precondition(steps <= bytes.count + 1, "wal-segment: the scanner does not advance")
                switch event {
                case .record(_, _, let bodyOffset, let bodyLength):
                    precondition(bodyOffset + bodyLength <= bytes.count, "wal-segment: a frame past the end of the segment")
                    scanner.withBody(bodyOffset: bodyOffset, length: bodyLength) { _ = try? RecordCodec.decode($0) }
                case .corrupt, .tornTail:
                    continue
                case .end:
                    break
                }
                if case .end = event { break }
            }
            _ = DeliveryProgress.decode(bytes)
            if let (_, keysOffset) = SegmentSummary.decode(bytes), let keysOffset { _ = SegmentSummary.decodeKeys(bytes, from: keysOffset) }
        case .amqpFrame:
            let decoder = AMQPFrameDecoder(maxFrameSize: 1 << 20)
            var rest = data
            while !rest.isEmpty {
                guard let (_, used) = try? decoder.decode(rest) else { return }
                precondition(used > 0 && used <= rest.count, "amqp-frame: a frame that takes \(used) of \(rest.count) bytes")
                rest = UnsafeRawBufferPointer(rebasing: rest[used...])
            }
        case .natsParser:
            let parser = NATSParser(maxControlLine: 1 << 16, maxMessage: 1 << 20)
            var rest = data
            while !rest.isEmpty {
                guard let (_, used) = try? parser.parse(rest) else { return }
                precondition(used > 0 && used <= rest.count, "nats-parser: an operation that takes \(used) of \(rest.count) bytes")
                rest = UnsafeRawBufferPointer(rebasing: rest[used...])
            }
        }
    }
}
