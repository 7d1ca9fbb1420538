import Foundation
import SinkdCore

/// The NATS client protocol (https://docs.nats.io/reference/reference-protocols/nats-protocol):
/// what the server sends, parsed from bytes, and what the client sends, encoded to bytes. No I/O.
///
/// Invariants:
/// - The parser consumes whole operations only; given a prefix of one it asks for more bytes and
///   consumes nothing, so a read may split an operation anywhere.
/// - It never buffers without a limit: a control line longer than `maxControlLine` or a message
///   larger than `maxMessage` is a protocol error (the connection is dropped, not grown).

/// What the server told us in INFO. Unknown fields are ignored.
public struct NATSServerInfo: Sendable, Equatable {
    public var serverID = ""
    public var version = ""
    public var maxPayload = 1_048_576
    public var headers = false
    public var authRequired = false
    public var tlsRequired = false
    public var tlsAvailable = false
    public var nonce: String?
    /// Other servers of the cluster the client may use (cluster discovery).
    public var connectURLs: [String] = []
    /// Lame-duck mode: the server is about to shut down; clients should move elsewhere.
    public var lameDuckMode = false
    public var jetStream = false

    /// nats-server refuses a max_payload above 64 MB.
    public static let maxPayloadLimit = 64 << 20

    public init() {}

    /// Decodes the JSON of an INFO line.
    public init(json: [UInt8]) throws(NATSProtocolError) {
        guard let fields = (try? JSONSerialization.jsonObject(with: Data(json))) as? [String: Any] else {
            throw NATSProtocolError("INFO is not a JSON object: \(String(decoding: json.prefix(200), as: UTF8.self))")
        }
        serverID = fields["server_id"] as? String ?? ""
        version = fields["version"] as? String ?? ""
        if let announced = fields["max_payload"] {
            // A server's limit is 1 MB by default and at most 64 MB; anything else (0, -1, 2^64,
            // a fraction, a string) is a broken or hostile INFO, not a reason to refuse records.
            guard let number = announced as? NSNumber, !(announced is Bool),
                number.doubleValue == number.doubleValue.rounded(),
                number.doubleValue >= 1, number.doubleValue <= Double(Self.maxPayloadLimit)
            else {
                throw NATSProtocolError(
                    "INFO announces max_payload \(announced), not a size from 1 to \(Self.maxPayloadLimit) bytes")
            }
            maxPayload = number.intValue
        }
        headers = fields["headers"] as? Bool ?? false
        authRequired = fields["auth_required"] as? Bool ?? false
        tlsRequired = fields["tls_required"] as? Bool ?? false
        tlsAvailable = fields["tls_available"] as? Bool ?? false
        nonce = fields["nonce"] as? String
        connectURLs = fields["connect_urls"] as? [String] ?? []
        lameDuckMode = fields["ldm"] as? Bool ?? false
        jetStream = fields["jetstream"] as? Bool ?? false
    }
}

/// One operation from the server.
public enum NATSServerOp: Sendable, Equatable {
    case info(NATSServerInfo)
    /// MSG or HMSG (`headers` nil for MSG). Only replies to our own inbox arrive here.
    case message(subject: String, sid: String, replyTo: String?, headers: [UInt8]?, payload: [UInt8])
    case ping
    case pong
    case ok
    case err(String)
}

public struct NATSProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

public struct NATSParser: Sendable {
    public var maxControlLine: Int
    public var maxMessage: Int

    public init(maxControlLine: Int = 1 << 20, maxMessage: Int = 64 << 20) {
        self.maxControlLine = maxControlLine
        self.maxMessage = maxMessage
    }

    /// Parses one operation at the start of `bytes`: the operation and how many bytes it took,
    /// or nil when `bytes` holds only part of one.
    public func parse(_ bytes: UnsafeRawBufferPointer) throws(NATSProtocolError) -> (NATSServerOp, Int)? {
        guard let lineEnd = Self.findCRLF(bytes, from: 0) else {
            if bytes.count > maxControlLine {
                throw NATSProtocolError("a control line longer than \(maxControlLine) bytes")
            }
            return nil
        }
        let line = UnsafeRawBufferPointer(rebasing: bytes[0..<lineEnd])
        let afterLine = lineEnd + 2
        let (op, argsStart) = Self.opName(line)
        switch op {
        case "PING": return (.ping, afterLine)
        case "PONG": return (.pong, afterLine)
        case "+OK": return (.ok, afterLine)
        case "-ERR":
            var text = String(decoding: line[argsStart...], as: UTF8.self).trimmingSpaces
            if text.hasPrefix("'"), text.hasSuffix("'"), text.count >= 2 { text = String(text.dropFirst().dropLast()) }
            return (.err(text), afterLine)
        case "INFO":
            return (.info(try NATSServerInfo(json: Array(line[argsStart...]))), afterLine)
        case "MSG", "HMSG":
            let args = Self.split(line[argsStart...])
            let withHeaders = op == "HMSG"
            let sizes = withHeaders ? 2 : 1
            guard args.count == 2 + sizes || args.count == 3 + sizes else {
                throw NATSProtocolError("\(op) with \(args.count) arguments: \(String(decoding: line, as: UTF8.self))")
            }
            guard let total = Int(args[args.count - 1]), total >= 0, total <= maxMessage else {
                throw NATSProtocolError("\(op) with a bad or too large size: \(String(decoding: line, as: UTF8.self))")
            }
            var headerBytes = 0
            if withHeaders {
                guard let h = Int(args[args.count - 2]), h >= 0, h <= total else {
                    throw NATSProtocolError("HMSG with a bad header size: \(String(decoding: line, as: UTF8.self))")
                }
                headerBytes = h
            }
            guard bytes.count >= afterLine + total + 2 else { return nil }
            guard bytes[afterLine + total] == 13, bytes[afterLine + total + 1] == 10 else {
                throw NATSProtocolError("\(op) payload is not followed by CRLF")
            }
            let body = bytes[afterLine..<(afterLine + total)]
            let headers: [UInt8]? = withHeaders ? Array(body.prefix(headerBytes)) : nil
            let payload = Array(body.dropFirst(headerBytes))
            let reply = args.count == 3 + sizes ? args[2] : nil
            return (
                .message(subject: args[0], sid: args[1], replyTo: reply, headers: headers, payload: payload),
                afterLine + total + 2
            )
        default:
            throw NATSProtocolError(
                "unknown operation from the server: \(String(decoding: line.prefix(80), as: UTF8.self))")
        }
    }

    static func findCRLF(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
        guard bytes.count >= 2 else { return nil }
        var i = start
        while i < bytes.count - 1 {
            if bytes[i] == 13, bytes[i + 1] == 10 { return i }
            i += 1
        }
        return nil
    }

    /// The upper-cased operation name and where its arguments start. The common names are
    /// recognised without building a String (this runs once per server operation).
    static func opName(_ line: UnsafeRawBufferPointer) -> (String, Int) {
        var end = 0
        while end < line.count, line[end] != 32, line[end] != 9 { end += 1 }
        var args = end
        while args < line.count, line[args] == 32 || line[args] == 9 { args += 1 }
        @inline(__always) func upper(_ b: UInt8) -> UInt8 { b >= 97 && b <= 122 ? b - 32 : b }
        switch end {
        case 3 where upper(line[0]) == 77 && upper(line[1]) == 83 && upper(line[2]) == 71: return ("MSG", args)
        case 4 where upper(line[0]) == 72 && upper(line[1]) == 77 && upper(line[2]) == 83 && upper(line[3]) == 71:
            return ("HMSG", args)
        default: return (String(decoding: line[0..<end], as: UTF8.self).uppercased(), args)
        }
    }

    static func split(_ bytes: Slice<UnsafeRawBufferPointer>) -> [String] {
        bytes.split(whereSeparator: { $0 == 32 || $0 == 9 }).map { String(decoding: $0, as: UTF8.self) }
    }
}

/// What the client sends.
public enum NATSEncoder {
    public static func pub(subject: [UInt8], payload: some Collection<UInt8>, into out: inout [UInt8]) {
        out.append(contentsOf: "PUB ".utf8)
        out.append(contentsOf: subject)
        out.append(32)
        appendDecimal(payload.count, into: &out)
        out.append(contentsOf: [13, 10])
        out.append(contentsOf: payload)
        out.append(contentsOf: [13, 10])
    }

    /// HPUB with a reply subject and headers (`headers` is the whole header block:
    /// `NATS/1.0\r\nName: value\r\n\r\n`).
    public static func hpub(
        subject: [UInt8], replyTo: [UInt8], headers: [UInt8], payload: some Collection<UInt8>, into out: inout [UInt8]
    ) {
        out.append(contentsOf: "HPUB ".utf8)
        out.append(contentsOf: subject)
        out.append(32)
        out.append(contentsOf: replyTo)
        out.append(32)
        appendDecimal(headers.count, into: &out)
        out.append(32)
        appendDecimal(headers.count + payload.count, into: &out)
        out.append(contentsOf: [13, 10])
        out.append(contentsOf: headers)
        out.append(contentsOf: payload)
        out.append(contentsOf: [13, 10])
    }

    /// The JetStream publish of one record: HPUB to `subject`, replies to `replyPrefix` + `index`,
    /// with the `Nats-Msg-Id` header, written straight into `out` (the hot path: no temporaries).
    public static func jetStreamPublish(
        subject: [UInt8], replyPrefix: [UInt8], index: Int, messageID: String, payload: [UInt8], into out: inout [UInt8]
    ) {
        let headerCount = messageIDHeaderPrefix.count + messageID.utf8.count + 4
        out.append(contentsOf: "HPUB ".utf8)
        out.append(contentsOf: subject)
        out.append(32)
        out.append(contentsOf: replyPrefix)
        appendDecimal(index, into: &out)
        out.append(32)
        appendDecimal(headerCount, into: &out)
        out.append(32)
        appendDecimal(headerCount + payload.count, into: &out)
        out.append(contentsOf: [13, 10])
        out.append(contentsOf: messageIDHeaderPrefix)
        out.append(contentsOf: messageID.utf8)
        out.append(contentsOf: [13, 10, 13, 10])
        out.append(contentsOf: payload)
        out.append(contentsOf: [13, 10])
    }

    static let messageIDHeaderPrefix = Array("NATS/1.0\r\nNats-Msg-Id: ".utf8)

    /// PUB with a reply subject (requests to the JetStream API).
    public static func request(subject: String, replyTo: String, payload: [UInt8], into out: inout [UInt8]) {
        out.append(contentsOf: "PUB \(subject) \(replyTo) \(payload.count)\r\n".utf8)
        out.append(contentsOf: payload)
        out.append(contentsOf: [13, 10])
    }

    public static func sub(subject: String, sid: String, into out: inout [UInt8]) {
        out.append(contentsOf: "SUB \(subject) \(sid)\r\n".utf8)
    }

    public static func connect(_ options: NATSConnectOptions, into out: inout [UInt8]) {
        out.append(contentsOf: "CONNECT ".utf8)
        out.append(contentsOf: options.json.utf8)
        out.append(contentsOf: [13, 10])
    }

    public static let ping: [UInt8] = Array("PING\r\n".utf8)
    public static let pong: [UInt8] = Array("PONG\r\n".utf8)

    /// The header block carrying `Nats-Msg-Id` (JetStream deduplication).
    public static func messageIDHeaders(_ id: String) -> [UInt8] {
        Array("NATS/1.0\r\nNats-Msg-Id: \(id)\r\n\r\n".utf8)
    }

    static func appendDecimal(_ value: Int, into out: inout [UInt8]) {
        if value == 0 {
            out.append(48)
            return
        }
        var digits:
            (
                UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                UInt8, UInt8, UInt8, UInt8, UInt8
            ) =
                (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = value
        var count = 0
        withUnsafeMutableBytes(of: &digits) { d in
            while n > 0 {
                d[count] = UInt8(48 + n % 10)
                n /= 10
                count += 1
            }
            for i in stride(from: count - 1, through: 0, by: -1) { out.append(d[i]) }
        }
    }
}

/// The CONNECT options sinkd sends.
public struct NATSConnectOptions: Sendable, Equatable {
    public var name = "sinkd"
    public var version = ""
    public var user: String?
    public var password: String?
    public var token: String?
    /// NKey public key and the nonce signature (NKey or credentials-file auth).
    public var nkey: String?
    public var signature: String?
    public var jwt: String?
    public var tlsRequired = false

    public init() {}

    /// verbose off (no +OK per PUB), pedantic off, headers and no_responders on (a JetStream
    /// publish to a subject without a stream answers 503 at once instead of timing out).
    public var json: String {
        var fields: [(String, String)] = [
            ("verbose", "false"), ("pedantic", "false"), ("tls_required", tlsRequired ? "true" : "false"),
            ("name", JSONText.quoted(name)), ("lang", "\"swift\""), ("version", JSONText.quoted(version)),
            ("protocol", "1"), ("headers", "true"), ("no_responders", "true"), ("echo", "false"),
        ]
        if let user { fields.append(("user", JSONText.quoted(user))) }
        if let password { fields.append(("pass", JSONText.quoted(password))) }
        if let token { fields.append(("auth_token", JSONText.quoted(token))) }
        if let jwt { fields.append(("jwt", JSONText.quoted(jwt))) }
        if let nkey { fields.append(("nkey", JSONText.quoted(nkey))) }
        if let signature { fields.append(("sig", JSONText.quoted(signature))) }
        return "{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}"
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}
