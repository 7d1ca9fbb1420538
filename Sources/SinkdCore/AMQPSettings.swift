/// The location of an `amqp_queue:` or `amqp_exchange:` sink, `NAME?key=value&key=value`, read as
/// Conductor's `AMQPSettings.fromURI` reads it (parameter names case-insensitive), but strict:
/// an unknown parameter, a repeated one or an invalid value is an error instead of a default.
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
    /// `x-max-priority` of a declared queue.
    public var maxPriority: Int?
    /// Accepted for compatibility (Conductor's consumer side); sinkd only publishes.
    public var bindQueueName: String?

    public struct ParseError: Error, Sendable, Equatable {
        public var reason: String
    }

    public static let parameterNames = ["exchangeType", "routingKey", "durable", "autoDelete", "exclusive", "deliveryMode", "maxPriority", "bindQueueName"]

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
        for pair in parts[1].split(separator: "&", omittingEmptySubsequences: true) {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let rawKey = String(kv[0])
            guard kv.count == 2 else {
                throw ParseError(reason: "parameter '\(rawKey)' has no '=value'")
            }
            guard let value = PercentDecoding.decode(kv[1], plusAsSpace: true) else {
                throw ParseError(reason: "parameter '\(rawKey)' has an invalid percent-encoding")
            }
            let key = rawKey.lowercased()
            guard let canonical = parameterNames.first(where: { $0.lowercased() == key }) else {
                throw ParseError(reason: "unknown AMQP parameter '\(rawKey)' (known: \(parameterNames.joined(separator: ", ")))")
            }
            guard seen.insert(key).inserted else {
                throw ParseError(reason: "parameter '\(canonical)' is given more than once")
            }
            switch canonical {
            case "exchangeType":
                guard !value.isEmpty else { throw ParseError(reason: "exchangeType must not be empty (direct, fanout, topic, headers, ...)") }
                settings.exchangeType = value
            case "routingKey":
                guard value.utf8.count <= 255 else { throw ParseError(reason: "routingKey is at most 255 bytes") }
                settings.routingKey = value
            case "durable": settings.durable = try boolean(value, canonical)
            case "autoDelete": settings.autoDelete = try boolean(value, canonical)
            case "exclusive": settings.exclusive = try boolean(value, canonical)
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

    private static func boolean(_ value: String, _ name: String) throws(ParseError) -> Bool {
        switch value.lowercased() {
        case "true": return true
        case "false": return false
        default: throw ParseError(reason: "\(name) must be true or false, got '\(value)'")
        }
    }

}
