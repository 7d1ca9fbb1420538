/// AMQP 0-9-1 frames (https://www.rabbitmq.com/resources/specs/amqp0-9-1.pdf, section 4.2):
/// decoded from bytes and encoded to bytes, no I/O. Only what a publisher needs.
///
///     frame  = type:octet channel:short size:long payload:size*octet 0xCE
///     method = class-id:short method-id:short arguments
///     header = class-id:short weight:short body-size:longlong property-flags:short properties
///
/// Invariants:
/// - The decoder consumes whole frames only; given part of one it asks for more bytes and
///   consumes nothing, so a read may split a frame anywhere.
/// - A frame larger than the negotiated frame_max (or, before tuning, 128 KiB), a missing 0xCE
///   end octet or a malformed argument is a protocol error: the connection is closed, never grown.

public enum AMQPFrameType: UInt8, Sendable {
    case method = 1, header = 2, body = 3, heartbeat = 8
}

public struct AMQPProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A field-table value (RabbitMQ's type letters).
public indirect enum AMQPFieldValue: Sendable, Equatable {
    case bool(Bool)
    case int8(Int8)
    case uint8(UInt8)
    case int16(Int16)
    case uint16(UInt16)
    case int32(Int32)
    case uint32(UInt32)
    case int64(Int64)
    case float(Float)
    case double(Double)
    case decimal(scale: UInt8, value: UInt32)
    case longString([UInt8])
    case array([AMQPFieldValue])
    case timestamp(UInt64)
    case table(AMQPTable)
    case void
    case bytes([UInt8])

    public static func string(_ s: String) -> AMQPFieldValue { .longString(Array(s.utf8)) }
}

/// A field table, in order (encoding keeps the order given).
public struct AMQPTable: Sendable, Equatable, ExpressibleByDictionaryLiteral {
    public var entries: [(String, AMQPFieldValue)]

    public init(_ entries: [(String, AMQPFieldValue)] = []) { self.entries = entries }
    public init(dictionaryLiteral elements: (String, AMQPFieldValue)...) { entries = elements }

    public subscript(key: String) -> AMQPFieldValue? { entries.first { $0.0 == key }?.1 }

    public static func == (a: AMQPTable, b: AMQPTable) -> Bool {
        a.entries.count == b.entries.count && zip(a.entries, b.entries).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
    }
}

/// The basic content properties sinkd sets (and reads back from a basic.return).
public struct AMQPProperties: Sendable, Equatable {
    public var contentType: String?
    public var contentEncoding: String?
    public var headers: AMQPTable?
    public var deliveryMode: UInt8?
    public var priority: UInt8?
    public var correlationID: String?
    public var replyTo: String?
    public var expiration: String?
    public var messageID: String?
    public var timestamp: UInt64?
    public var type: String?
    public var userID: String?
    public var appID: String?

    public init() {}
}

/// A method, by class and method: those a publisher sends or receives.
public enum AMQPMethod: Sendable, Equatable {
    // connection (10)
    case connectionStart(
        versionMajor: UInt8, versionMinor: UInt8, serverProperties: AMQPTable, mechanisms: String, locales: String)
    case connectionStartOk(clientProperties: AMQPTable, mechanism: String, response: [UInt8], locale: String)
    case connectionTune(channelMax: UInt16, frameMax: UInt32, heartbeat: UInt16)
    case connectionTuneOk(channelMax: UInt16, frameMax: UInt32, heartbeat: UInt16)
    case connectionOpen(virtualHost: String)
    case connectionOpenOk
    case connectionClose(replyCode: UInt16, replyText: String, classID: UInt16, methodID: UInt16)
    case connectionCloseOk
    case connectionBlocked(reason: String)
    case connectionUnblocked
    // channel (20)
    case channelOpen
    case channelOpenOk
    case channelFlow(active: Bool)
    case channelFlowOk(active: Bool)
    case channelClose(replyCode: UInt16, replyText: String, classID: UInt16, methodID: UInt16)
    case channelCloseOk
    // exchange (40)
    case exchangeDeclare(
        exchange: String, type: String, passive: Bool, durable: Bool, autoDelete: Bool, internal: Bool, noWait: Bool,
        arguments: AMQPTable)
    case exchangeDeclareOk
    // queue (50)
    case queueDeclare(
        queue: String, passive: Bool, durable: Bool, exclusive: Bool, autoDelete: Bool, noWait: Bool,
        arguments: AMQPTable)
    case queueDeclareOk(queue: String, messageCount: UInt32, consumerCount: UInt32)
    // basic (60)
    case basicPublish(exchange: String, routingKey: String, mandatory: Bool, immediate: Bool)
    case basicReturn(replyCode: UInt16, replyText: String, exchange: String, routingKey: String)
    case basicAck(deliveryTag: UInt64, multiple: Bool)
    case basicNack(deliveryTag: UInt64, multiple: Bool, requeue: Bool)
    // confirm (85)
    case confirmSelect(noWait: Bool)
    case confirmSelectOk

    /// (class-id, method-id) for error messages and close frames.
    public var ids: (UInt16, UInt16) {
        switch self {
        case .connectionStart: (10, 10)
        case .connectionStartOk: (10, 11)
        case .connectionTune: (10, 30)
        case .connectionTuneOk: (10, 31)
        case .connectionOpen: (10, 40)
        case .connectionOpenOk: (10, 41)
        case .connectionClose: (10, 50)
        case .connectionCloseOk: (10, 51)
        case .connectionBlocked: (10, 60)
        case .connectionUnblocked: (10, 61)
        case .channelOpen: (20, 10)
        case .channelOpenOk: (20, 11)
        case .channelFlow: (20, 20)
        case .channelFlowOk: (20, 21)
        case .channelClose: (20, 40)
        case .channelCloseOk: (20, 41)
        case .exchangeDeclare: (40, 10)
        case .exchangeDeclareOk: (40, 11)
        case .queueDeclare: (50, 10)
        case .queueDeclareOk: (50, 11)
        case .basicPublish: (60, 40)
        case .basicReturn: (60, 50)
        case .basicAck: (60, 80)
        case .basicNack: (60, 120)
        case .confirmSelect: (85, 10)
        case .confirmSelectOk: (85, 11)
        }
    }
}

public enum AMQPFramePayload: Sendable, Equatable {
    case method(AMQPMethod)
    case header(classID: UInt16, bodySize: UInt64, properties: AMQPProperties)
    case body([UInt8])
    case heartbeat
}

public struct AMQPFrame: Sendable, Equatable {
    public var channel: UInt16
    public var payload: AMQPFramePayload

    public init(channel: UInt16, _ payload: AMQPFramePayload) {
        self.channel = channel
        self.payload = payload
    }

    public static let protocolHeader: [UInt8] = [65, 77, 81, 80, 0, 0, 9, 1]  // "AMQP" 0 0 9 1
    public static let frameEnd: UInt8 = 0xCE
    /// Bytes a frame adds around its payload (type, channel, size, end).
    public static let overhead = 8
}
