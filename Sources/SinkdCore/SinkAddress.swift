/// The prefixes of Conductor's sink grammar, plus sinkd's own `file`, `http` and `redis`.
public enum SinkPrefix: String, Sendable, Hashable, CaseIterable {
    case conductor, sqs
    case amqpQueue = "amqp_queue"
    case amqpExchange = "amqp_exchange"
    case nats
    case natsStream = "nats_stream"
    case jsm, kafka, file, http, redis

    /// The `sinks:` section that configures this prefix; nil for prefixes sinkd does not support yet.
    public var configFamily: ConfigFamily? {
        switch self {
        case .conductor: .conductor
        case .sqs: .sqs
        case .amqpQueue, .amqpExchange: .amqp
        case .nats, .natsStream, .jsm: .nats
        case .kafka: .kafka
        case .file: .file
        case .http: .http
        case .redis: .redis
        }
    }

    static let knownList = allCases.map(\.rawValue).joined(separator: ", ")
}

/// A parsed, validated sink: where a record goes.
///
/// `identity` (`prefix:location` after Conductor's expansion of `conductor` sinks) names the sink
/// everywhere: one delivery pipeline per identity, and the label of its metrics and log fields.
public struct SinkAddress: Sendable, Hashable, CustomStringConvertible {
    public var prefix: SinkPrefix
    public var location: String
    public var target: Target

    public enum Target: Sendable, Hashable {
        /// Conductor's QueueDAO queue `<workflowType>:<name>`.
        case conductorQueue(String)
        /// An SQS queue by name (`orders`, `orders.fifo`) or by its https:// URL.
        case sqsQueue(String)
        case amqp(AMQPSettings)
        /// A NATS subject; `queueGroup` only matters to consumers.
        case natsSubject(String, queueGroup: String?)
        case kafkaTopic(String)
        case file(String)
        case httpEndpoint(String)
        case redisStream(String)
    }

    public var identity: String { "\(prefix.rawValue):\(location)" }
    public var description: String { identity }
}

/// Why a sink string was refused. `description` is the message a client sees.
public enum SinkAddressError: Error, Sendable, Equatable, CustomStringConvertible {
    case noColon(String)
    case unknownPrefix(String)
    case notSupportedYet(SinkPrefix)
    case familyNotConfigured(ConfigFamily, prefix: SinkPrefix, configPath: String)
    case emptyLocation(String)
    case invalidConductorSink(String)
    case missingContext(sink: String, field: String)
    case invalidLocation(sink: String, reason: String)
    case unknownHTTPEndpoint(String, known: [String])

    /// Whether the sink is unusable because of sinkd's configuration (protocol code unknown_sink),
    /// rather than because the string itself is wrong (invalid_sink).
    public var isConfigurationProblem: Bool {
        switch self {
        case .familyNotConfigured, .unknownHTTPEndpoint, .notSupportedYet: true
        default: false
        }
    }

    public var description: String {
        switch self {
        case .noColon(let sink):
            "sink '\(sink)' has no ':'; expected PREFIX:LOCATION such as sqs:orders (known prefixes: \(SinkPrefix.knownList))"
        case .unknownPrefix(let prefix):
            "unknown sink prefix '\(prefix)' (known: \(SinkPrefix.knownList))"
        case .notSupportedYet(let prefix):
            "sink prefix '\(prefix.rawValue)' is recognised but not supported yet by sinkd"
        case .familyNotConfigured(let family, let prefix, let path):
            family.rawValue == prefix.rawValue
                ? "sink family '\(family.rawValue)' is not configured in \(path)"
                : "sink family '\(family.rawValue)' (which serves \(prefix.rawValue) sinks) is not configured in \(path)"
        case .emptyLocation(let sink):
            "sink '\(sink)' has nothing after the ':'; expected a queue, subject, stream or name there"
        case .invalidConductorSink(let sink):
            "invalid sink '\(sink)': Conductor accepts only 'conductor' or 'conductor:NAME' for its own queue"
        case .missingContext(let sink, let field):
            "sink '\(sink)' needs the record's \(field) (Conductor expands conductor sinks with workflowType and taskRefName)"
        case .invalidLocation(let sink, let reason):
            "invalid sink '\(sink)': \(reason)"
        case .unknownHTTPEndpoint(let name, let known):
            known.isEmpty
                ? "http endpoint '\(name)' is not configured (sinks.http.endpoints is empty)"
                : "http endpoint '\(name)' is not configured (configured: \(known.joined(separator: ", ")))"
        }
    }
}

extension SinkAddress {
    /// Parses a sink string exactly as Conductor's EVENT task does, then validates it against
    /// sinkd's configuration.
    ///
    /// 1. `conductor` becomes `conductor:<workflowType>:<taskRefName>`; `conductor:X` becomes
    ///    `conductor:<workflowType>:` + X with every `conductor:` removed; any other string starting
    ///    with `conductor` is invalid.
    /// 2. Split at the first `:` into prefix and location.
    public static func parse(
        _ sink: String,
        workflowType: String?,
        taskRefName: String?,
        sinks: SinksConfig,
        configPath: String,
        expanded: Bool = false
    ) throws(SinkAddressError) -> SinkAddress {
        // The expanded form (`queueType:queueURI`, as a provider's getQueue sees it) is not expanded again.
        let address =
            expanded ? try parse(identity: sink) : try parse(sink, workflowType: workflowType, taskRefName: taskRefName)
        guard let family = address.prefix.configFamily else { throw .notSupportedYet(address.prefix) }
        guard sinks.configuredFamilies.contains(family) else {
            throw .familyNotConfigured(family, prefix: address.prefix, configPath: configPath)
        }
        if address.prefix == .jsm, case .natsSubject("", _) = address.target,
            (sinks.nats?.jsmSubjectPrefix ?? "").isEmpty
        {
            throw .invalidLocation(
                sink: sink,
                reason:
                    "'jsm:' alone publishes to sinks.nats.jsm.subject_prefix, which is empty: name a subject (jsm:orders)"
            )
        }
        if case .httpEndpoint(let name) = address.target, let http = sinks.http, http.endpoints[name] == nil {
            throw .unknownHTTPEndpoint(name, known: http.endpoints.keys.sorted())
        }
        return address
    }

    /// The grammar alone, without looking at which families are configured.
    public static func parse(
        _ sink: String, workflowType: String?, taskRefName: String?
    ) throws(SinkAddressError) -> SinkAddress {
        // After expansion only `conductor` sinks change, and their errors are raised by the expansion.
        try parse(identity: try expandConductor(sink, workflowType: workflowType, taskRefName: taskRefName))
    }

    /// Parses a normalized identity (`prefix:location`, as stored in the WAL): no expansion.
    public static func parse(identity: String) throws(SinkAddressError) -> SinkAddress {
        guard let colon = identity.firstIndex(of: ":") else { throw .noColon(identity) }
        let prefixText = String(identity[..<colon])
        let location = String(identity[identity.index(after: colon)...])
        guard let prefix = SinkPrefix(rawValue: prefixText) else { throw .unknownPrefix(prefixText) }
        // `jsm:` alone is Conductor's subject prefix by itself (checked against the configured prefix
        // where the configuration is known).
        guard !location.isEmpty || prefix == .jsm else { throw .emptyLocation(identity) }
        return SinkAddress(
            prefix: prefix, location: location, target: try parseTarget(prefix, location: location, sink: identity))
    }

    static func expandConductor(
        _ sink: String, workflowType: String?, taskRefName: String?
    ) throws(SinkAddressError) -> String {
        guard sink.hasPrefix("conductor") else { return sink }
        guard let workflowType, !workflowType.isEmpty else { throw .missingContext(sink: sink, field: "workflowType") }
        guard let taskRefName, !taskRefName.isEmpty else { throw .missingContext(sink: sink, field: "taskRefName") }
        if sink == "conductor" {
            return "conductor:\(workflowType):\(taskRefName)"
        }
        guard sink.hasPrefix("conductor:") else { throw .invalidConductorSink(sink) }
        // Java's String.replace: one left-to-right pass over non-overlapping occurrences.
        // An empty X (`conductor:`, `conductor:conductor:`) gives the queue `<workflowType>:`, as in
        // Conductor (the conductor family logs once that the name ends in ':').
        let name = String(sink.dropFirst("conductor:".count)).replacing("conductor:", with: "")
        return "conductor:\(workflowType):\(name)"
    }

    private static func parseTarget(
        _ prefix: SinkPrefix, location: String, sink: String
    ) throws(SinkAddressError) -> Target {
        switch prefix {
        case .conductor:
            return .conductorQueue(location)
        case .sqs:
            if location.hasPrefix("https://") || location.hasPrefix("http://") {
                return .sqsQueue(location)
            }
            guard SinkName.isValidSQSQueueName(location) else {
                throw .invalidLocation(
                    sink: sink,
                    reason:
                        "an SQS queue name has 1 to 80 letters, digits, '-' or '_' (plus '.fifo' for FIFO queues), or is an https:// queue URL"
                )
            }
            return .sqsQueue(location)
        case .amqpQueue, .amqpExchange:
            do {
                return .amqp(try AMQPSettings.parse(location, kind: prefix == .amqpQueue ? .queue : .exchange))
            } catch {
                throw .invalidLocation(sink: sink, reason: error.reason)
            }
        case .nats, .natsStream, .jsm:
            var subject = location
            var group: String?
            // Conductor's `subject:queueGroup`, for every NATS prefix (the group is the consumers').
            if let colon = location.firstIndex(of: ":") {
                subject = String(location[..<colon])
                group = String(location[location.index(after: colon)...])
                // Conductor splits at ':' (Java drops the trailing empty part): `orders:` is the
                // subject `orders` with no group.
                if group == "" { group = nil }
                guard group == nil || !(group!.contains(where: \.isWhitespace)) else {
                    throw .invalidLocation(sink: sink, reason: "the queue group after the subject contains white space")
                }
            }
            // As Conductor: core NATS publishes any subject the server takes (an empty token, as in
            // `orders..x`, is published; the family warns once); `jsm:` alone is the prefix itself.
            // White space can never be sent (it would split the PUB line).
            let valid =
                switch prefix {
                case .nats: SinkName.isPublishableNATSSubject(subject)
                case .jsm where subject.isEmpty: true
                default: SinkName.isValidNATSSubject(subject)
                }
            guard valid else {
                throw .invalidLocation(
                    sink: sink,
                    reason:
                        "a NATS subject is dot-separated non-empty tokens without white space or ':' (e.g. orders.created)"
                )
            }
            return .natsSubject(subject, queueGroup: group)
        case .kafka:
            return .kafkaTopic(location)
        case .file:
            guard SinkName.isValidFileName(location) else {
                throw .invalidLocation(
                    sink: sink,
                    reason:
                        "a file sink name may use letters, digits, '.', '_' and '-', must not start with '.', and is at most 200 bytes"
                )
            }
            return .file(location)
        case .http:
            guard SinkName.isValidFileName(location) else {
                throw .invalidLocation(
                    sink: sink,
                    reason: "an http sink names an endpoint of sinks.http.endpoints (letters, digits, '.', '_', '-')")
            }
            return .httpEndpoint(location)
        case .redis:
            guard !location.contains(where: { $0.isWhitespace }), location.utf8.count <= 512 else {
                throw .invalidLocation(
                    sink: sink, reason: "a redis stream key must not contain white space and is at most 512 bytes")
            }
            return .redisStream(location)
        }
    }
}

/// Rules for the names that follow a sink prefix.
public enum SinkName {
    public static func isValidFileName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 200, !name.hasPrefix(".") else { return false }
        return name.utf8.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2E || b == 0x5F
                || b == 0x2D
        }
    }

    public static func isValidSQSQueueName(_ name: String) -> Bool {
        var base = Substring(name)
        if base.hasSuffix(".fifo") { base = base.dropLast(5) }
        guard !base.isEmpty, name.utf8.count <= 80 else { return false }
        return base.utf8.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x5F || b == 0x2D
        }
    }

    /// What core NATS can publish: non-empty, no white space (it would split the PUB line), no ':'.
    public static func isPublishableNATSSubject(_ subject: String) -> Bool {
        !subject.isEmpty && !subject.contains(where: { $0.isWhitespace || $0 == ":" })
    }

    public static func isValidNATSSubject(_ subject: String) -> Bool {
        guard !subject.isEmpty else { return false }
        for token in subject.split(separator: ".", omittingEmptySubsequences: false) {
            guard !token.isEmpty, !token.contains(where: { $0.isWhitespace || $0 == ":" }) else { return false }
        }
        return true
    }
}
