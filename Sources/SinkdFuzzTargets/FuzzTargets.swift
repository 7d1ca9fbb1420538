import SinkdAMQPSink
import SinkdCore
import SinkdDelivery
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
    /// Numbers in a configuration: the first byte picks a numeric key, the rest is its value;
    /// what loads is then used as the daemon uses it (WAL options, the descriptor budget, retry
    /// schedules, idle timers, the summary), which must not trap either.
    case configNumbers = "config-numbers"
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
            precondition(
                again.identity == address.identity,
                "sink-address: identity changes on a second parse: '\(address.identity)' → '\(again.identity)'")
        case .config:
            _ = try? ConfigLoader.parse(
                yaml: String(decoding: data, as: UTF8.self), file: "fuzz.yaml", environment: [:], workingDirectory: "/")
        case .configNumbers:
            guard let first = data.first else { return }
            let key = ConfigNumbers.keys[Int(first) % ConfigNumbers.keys.count]
            let value = String(decoding: UnsafeRawBufferPointer(rebasing: data[1...]), as: UTF8.self)
            ConfigNumbers.check(key: key, value: value)
        case .walSegment:
            let bytes = Array(data)
            var scanner = SegmentScanner(source: MemorySegment(bytes), maxBody: 1 << 20)
            var steps = 0
            while let event = try? scanner.next() {
                steps += 1
                precondition(steps <= bytes.count + 1, "wal-segment: the scanner does not advance")
                switch event {
                case .record(_, _, let bodyOffset, let bodyLength):
                    precondition(
                        bodyOffset + bodyLength <= bytes.count, "wal-segment: a frame past the end of the segment")
                    scanner.withBody(bodyOffset: bodyOffset, length: bodyLength) { _ = try? RecordCodec.decode($0) }
                case .corrupt, .tornTail:
                    continue
                case .end:
                    break
                }
                if case .end = event { break }
            }
            _ = DeliveryProgress.decode(bytes)
            if let (_, keysOffset) = SegmentSummary.decode(bytes), let keysOffset {
                _ = SegmentSummary.decodeKeys(bytes, from: keysOffset)
            }
        case .amqpFrame:
            let decoder = AMQPFrameDecoder(maxFrameSize: 1 << 20)
            var rest = data
            while !rest.isEmpty {
                guard let (_, used) = try? decoder.decode(rest) else { return }
                precondition(
                    used > 0 && used <= rest.count, "amqp-frame: a frame that takes \(used) of \(rest.count) bytes")
                rest = UnsafeRawBufferPointer(rebasing: rest[used...])
            }
        case .natsParser:
            let parser = NATSParser(maxControlLine: 1 << 16, maxMessage: 1 << 20)
            var rest = data
            while !rest.isEmpty {
                guard let (_, used) = try? parser.parse(rest) else { return }
                precondition(
                    used > 0 && used <= rest.count,
                    "nats-parser: an operation that takes \(used) of \(rest.count) bytes")
                rest = UnsafeRawBufferPointer(rebasing: rest[used...])
            }
        }
    }
}

/// The `config-numbers` target (also run over a fixed table by the tests).
public enum ConfigNumbers {
    /// Every numeric key, dotted; `sinks.X.*` with a family section around it.
    public static let keys = [
        "ingest.max_record_bytes", "ingest.max_connections", "ingest.max_unanswered_bytes", "ingest.idle_timeout",
        "wal.segment_size", "wal.max_size", "wal.fsync_interval",
        "delivery.dedupe_window", "delivery.dedupe_max_entries", "delivery.shutdown_timeout", "delivery.max_sinks",
        "delivery.max_held_bytes_per_sink", "delivery.max_held_bytes",
        "delivery.retry.initial_backoff", "delivery.retry.max_backoff", "delivery.retry.multiplier",
        "delivery.retry.max_attempts", "delivery.retry.max_age",
        "sinks.file.pool_size", "sinks.file.max_in_flight", "sinks.file.batch_size", "sinks.file.idle_timeout",
        "sinks.redis.maxlen", "sinks.redis.retry.multiplier", "sinks.redis.retry.max_backoff",
        "sinks.sqs.max_batch_bytes", "sinks.sqs.max_message_bytes",
        "sinks.amqp.heartbeat", "sinks.amqp.connections", "sinks.amqp.max_in_flight",
        "sinks.nats.batch_size", "sinks.conductor.postgres.port",
    ]

    /// The YAML for `key: value` (value quoted, so every byte reaches the key's own parser).
    public static func yaml(key: String, value: String) -> String {
        let parts = key.split(separator: ".")
        var text = ""
        for (depth, part) in parts.enumerated() {
            text += String(repeating: "  ", count: depth) + part + ":"
            if depth == parts.count - 1 {
                let escaped = value.unicodeScalars.map { s -> String in
                    switch s {
                    case "\"": return "\\\""
                    case "\\": return "\\\\"
                    case _ where s.value < 0x20 || s.value == 0x7F: return ""
                    default: return String(s)
                    }
                }.joined()
                text += " \"" + escaped + "\"\n"
            } else {
                text += "\n"
            }
        }
        return text
    }

    public static func check(key: String, value: String) {
        guard
            let config = try? ConfigLoader.parse(
                yaml: yaml(key: key, value: value), file: "fuzz.yaml", environment: [:], workingDirectory: "/")
        else { return }
        use(config)
    }

    /// What the daemon computes from a loaded configuration.
    public static func use(_ config: SinkdConfig) {
        let wal = WALOptions(config)
        _ = wal.pendingBudget
        _ = Int(wal.fsyncInterval.milliseconds) * 1_000_000  // the writer's wait
        _ = UInt64(wal.dedupeWindow.milliseconds)
        _ = ConfigSummary.render(config)
        for limit in [256, 1024, 1 << 20, Int.max] { _ = DescriptorBudget(limit: limit, config: config) }
        _ = UInt64(max(0, config.delivery.shutdownTimeout.milliseconds))
        for family in ConfigFamily.allCases {
            guard let options = config.sinks.options(for: family) else { continue }
            _ = UInt64(max(0, options.idleTimeout.milliseconds))
            let schedule = RetrySchedule(options.retry)
            for attempts in [1, 2, 64, 1 << 20, Int.max] {
                _ = schedule.delay(afterAttempts: attempts, unit: 0.999)
                _ = schedule.isExhausted(attempts: attempts, firstAttemptMillis: 0, nowMillis: .max)
            }
            _ = PipelineStateMachine.Settings(
                limits: SinkLimits(maxBatchCount: options.batchSize, maxBatchBytes: 8 << 20, maxMessageBytes: 64 << 20),
                options: options,
                byteLimit: config.delivery.maxHeldBytesPerSink)
        }
    }
}
