/// The location of an `amqp_queue:` or `amqp_exchange:` sink, `NAME?key=value&key=value`, read
/// exactly as Conductor's `AMQPSettings.fromURI` reads it, so that every sink Conductor accepts is
/// accepted with the meaning Conductor gives it (issue 20, items 6 and 8):
///
/// - parameters are split at `&` and at `=` with the white space around either dropped; names are
///   case-insensitive; values are used verbatim (no percent-decoding, `+` stays `+`);
/// - a parameter that is not exactly `name=value` (no `=`, an empty value, two `=`) and an unknown
///   name are ignored, so `exchangeType=` means the default; a repeated one: the last wins;
/// - `durable`, `exclusive`, `autoDelete`: `true` in any case is true, anything else false (Java's
///   `Boolean.parseBoolean`);
/// - what Conductor itself refuses is refused (an invalid `deliveryMode` or `maxPriority`).
///
/// Where Conductor's meaning may surprise (an ignored parameter, a repeated one, `durable=yes` read
/// as false), `notes` says so; the AMQP family logs them once per sink.
public struct AMQPSettings: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable { case queue, exchange }

    public var kind: Kind
    /// The queue name (amqp_queue) or exchange name (amqp_exchange).
    public var name: String
    public var exchangeType = "topic"
    public var routingKey = ""
    public var durable = true
    public var autoDelete = false
    public var exclusive = false
    /// 1 (transient) or 2 (persistent).
    public var deliveryMode: UInt8 = 2
    /// `x-max-priority` of a declared queue (and, as Conductor passes it, of a declared exchange).
    public var maxPriority: Int?
    /// Accepted for compatibility (Conductor's consumer side); sinkd only publishes.
    public var bindQueueName: String?
    /// What Conductor's reading of the parameters did that a reader might not expect.
    public var notes: [String] = []

    public init(kind: Kind, name: String) {
        self.kind = kind
        self.name = name
    }

    public struct ParseError: Error, Sendable, Equatable {
        public var reason: String
    }

    public static let parameterNames = [
        "exchangeType", "routingKey", "durable", "autoDelete", "exclusive", "deliveryMode", "maxPriority",
        "bindQueueName",
    ]

    public static func parse(_ location: String, kind: Kind) throws(ParseError) -> AMQPSettings {
        let parts = location.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let name = String(parts[0])
        guard !name.isEmpty else {
            throw ParseError(reason: "the \(kind.rawValue) name before '?' is empty")
        }
        guard name.utf8.count <= 255 else {
            throw ParseError(reason: "an AMQP \(kind.rawValue) name is at most 255 bytes")
        }
        var settings = AMQPSettings(kind: kind, name: name)
        guard parts.count == 2 else { return settings }
        var seen = Set<String>()
        for raw in javaSplit(Substring(parts[1]), at: "&") {
            let kv = javaSplit(raw, at: "=")
            let rawKey = kv.first.map(String.init) ?? ""
            guard kv.count == 2 else {
                if !raw.allSatisfy(\.isWhitespace) {
                    settings.notes.append(
                        "parameter '\(raw)' is not name=value and is ignored, as Conductor ignores it")
                }
                continue
            }
            let value = String(kv[1])
            guard let canonical = parameterNames.first(where: { $0.lowercased() == rawKey.lowercased() }) else {
                settings.notes.append(
                    "unknown parameter '\(rawKey)' is ignored, as Conductor ignores it (known: \(parameterNames.joined(separator: ", ")))"
                )
                continue
            }
            if !seen.insert(canonical).inserted {
                settings.notes.append(
                    "parameter '\(canonical)' is given more than once; the last value is used, as Conductor does")
            }
            switch canonical {
            case "exchangeType": settings.exchangeType = value
            case "routingKey":
                guard value.utf8.count <= 255 else {
                    throw ParseError(reason: "routingKey is at most 255 bytes (an AMQP shortstr)")
                }
                settings.routingKey = value
            case "durable": settings.durable = boolean(value, canonical, &settings.notes)
            case "autoDelete": settings.autoDelete = boolean(value, canonical, &settings.notes)
            case "exclusive": settings.exclusive = boolean(value, canonical, &settings.notes)
            case "deliveryMode":
                guard value == "1" || value == "2" else {
                    throw ParseError(reason: "deliveryMode must be 1 (transient) or 2 (persistent), got '\(value)'")
                }
                settings.deliveryMode = value == "1" ? 1 : 2
            case "maxPriority":
                guard let n = Int(value), (1...255).contains(n) else {
                    throw ParseError(reason: "maxPriority must be an integer from 1 to 255, got '\(value)'")
                }
                settings.maxPriority = n
            default:  // bindQueueName
                settings.bindQueueName = value
            }
        }
        return settings
    }

    /// Java's `text.split("\\s*" + separator + "\\s*")`: white space next to a separator goes with
    /// it (white space at either end of the text stays), and trailing empty strings are dropped.
    static func javaSplit(_ text: Substring, at separator: Character) -> [Substring] {
        var pieces = text.split(separator: separator, omittingEmptySubsequences: false)
        for i in pieces.indices {
            var piece = pieces[i]
            if i > 0 { piece = piece.drop(while: \.isWhitespace) }
            if i < pieces.count - 1 { while let last = piece.last, last.isWhitespace { piece = piece.dropLast() } }
            pieces[i] = piece
        }
        while let last = pieces.last, last.isEmpty, pieces.count > 0 { pieces.removeLast() }
        return pieces
    }

    /// Java's Boolean.parseBoolean: "true" in any case, else false.
    private static func boolean(_ value: String, _ name: String, _ notes: inout [String]) -> Bool {
        if value.lowercased() == "true" { return true }
        if value.lowercased() != "false" {
            notes.append("\(name)=\(value) is read as false, as Conductor reads it (only 'true' is true)")
        }
        return false
    }
}
