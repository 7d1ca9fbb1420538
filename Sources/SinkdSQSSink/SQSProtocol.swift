import Foundation
import SinkdCore

/// The parts of the SQS JSON protocol (`application/x-amz-json-1.0`) sinkd speaks, free of I/O:
/// request bodies, response parsing and what each error means for delivery.
public enum SQSProtocol {
    public static let contentType = "application/x-amz-json-1.0"

    public enum Action: String, Sendable {
        case sendMessageBatch = "SendMessageBatch"
        case getQueueUrl = "GetQueueUrl"
        case createQueue = "CreateQueue"
        case receiveMessage = "ReceiveMessage"
        case deleteMessageBatch = "DeleteMessageBatch"
        case getQueueAttributes = "GetQueueAttributes"

        public var target: String { "AmazonSQS." + rawValue }
    }

    /// What a FIFO entry needs and what attributes go with a message.
    public struct EntryOptions: Sendable, Equatable {
        public var fifo: Bool
        public var groupIDTemplate: String
        public var messageAttributes: Bool
        public var sink: String

        public init(fifo: Bool, groupIDTemplate: String, messageAttributes: Bool, sink: String) {
            self.fifo = fifo
            self.groupIDTemplate = groupIDTemplate
            self.messageAttributes = messageAttributes
            self.sink = sink
        }
    }

    /// The SendMessageBatch body: entry ids are the batch positions ("0".."9").
    public static func sendMessageBatch(queueURL: String, records: [EventRecord], options: EntryOptions) -> [UInt8] {
        var out = Array(#"{"QueueUrl":"#.utf8)
        JSONText.appendString(queueURL, to: &out)
        out += Array(#","Entries":["#.utf8)
        for (index, record) in records.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            out += Array(#"{"Id":"\#(index)","MessageBody":"#.utf8)
            JSONText.appendString(String(decoding: record.payload, as: UTF8.self), to: &out)
            if options.messageAttributes {
                out += Array(#","MessageAttributes":{"#.utf8)
                var first = true
                for (name, value) in attributes(record) {
                    if !first { out.append(UInt8(ascii: ",")) }
                    first = false
                    JSONText.appendString(name, to: &out)
                    out += Array(#":{"DataType":"String","StringValue":"#.utf8)
                    JSONText.appendString(value, to: &out)
                    out.append(UInt8(ascii: "}"))
                }
                out.append(UInt8(ascii: "}"))
            }
            if options.fifo {
                out += Array(#","MessageGroupId":"#.utf8)
                JSONText.appendString(groupID(options.groupIDTemplate, record: record, sink: options.sink), to: &out)
                out += Array(#","MessageDeduplicationId":"#.utf8)
                JSONText.appendString(deduplicationID(record.id), to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
        out += Array("]}".utf8)
        return out
    }

    /// `sinkd-message-id`, then the context fields the record has.
    static func attributes(_ record: EventRecord) -> [(String, String)] {
        var out = [("sinkd-message-id", record.id)]
        if let w = record.workflowInstanceId, !w.isEmpty { out.append(("workflowInstanceId", w)) }
        if let t = record.workflowType, !t.isEmpty { out.append(("workflowType", t)) }
        if let c = record.correlationId, !c.isEmpty { out.append(("correlationId", c)) }
        return out
    }

    /// `{{field}}` placeholders (workflowInstanceId, workflowType, correlationId, taskRefName, id)
    /// filled from the record; an empty result falls back to the sink name. At most 128
    /// characters, as SQS allows.
    public static func groupID(_ template: String, record: EventRecord, sink: String) -> String {
        var value = template
        let fields: [(String, String?)] = [
            ("workflowInstanceId", record.workflowInstanceId), ("workflowType", record.workflowType),
            ("correlationId", record.correlationId), ("taskRefName", record.taskRefName), ("id", record.id),
        ]
        for (name, field) in fields { value = value.replacingOccurrences(of: "{{\(name)}}", with: field ?? "") }
        if value.isEmpty { value = sink }
        return String(value.prefix(128))
    }

    /// The record id, if SQS accepts it as a deduplication id (at most 128 of the characters
    /// [A-Za-z0-9!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~]); otherwise the hex spelling of its UTF-8 bytes (cut at 128).
    static func deduplicationID(_ id: String) -> String {
        let allowed = id.utf8.count <= 128 && id.utf8.allSatisfy { $0 >= 0x21 && $0 <= 0x7E }
        return allowed ? id : String(SigV4Signer.hex(id.utf8).prefix(128))
    }

    public static func getQueueUrl(name: String, ownerAccountID: String) -> [UInt8] {
        var object: [String: Any] = ["QueueName": name]
        if !ownerAccountID.isEmpty { object["QueueOwnerAWSAccountId"] = ownerAccountID }
        return json(object)
    }

    /// CreateQueue; a name ending in `.fifo` creates a FIFO queue (deduplication by the ids sinkd sends).
    public static func createQueue(name: String) -> [UInt8] {
        var object: [String: Any] = ["QueueName": name]
        if name.hasSuffix(".fifo") {
            object["Attributes"] = ["FifoQueue": "true", "ContentBasedDeduplication": "false"]
        }
        return json(object)
    }

    static func json(_ object: [String: Any]) -> [UInt8] {
        Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data())
    }

    // MARK: responses

    public struct BatchResult: Sendable, Equatable {
        public struct Failure: Sendable, Equatable {
            public var senderFault: Bool
            public var code: String
            public var message: String
        }

        public var successful: Set<Int> = []
        public var failed: [Int: Failure] = [:]
    }

    /// A 200 response of SendMessageBatch.
    public static func parseBatchResult(_ body: [UInt8]) -> BatchResult? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else { return nil }
        var result = BatchResult()
        for entry in object["Successful"] as? [[String: Any]] ?? [] {
            if let id = (entry["Id"] as? String).flatMap(Int.init) { result.successful.insert(id) }
        }
        for entry in object["Failed"] as? [[String: Any]] ?? [] {
            guard let id = (entry["Id"] as? String).flatMap(Int.init) else { continue }
            result.failed[id] = .init(
                senderFault: entry["SenderFault"] as? Bool ?? false, code: entry["Code"] as? String ?? "",
                message: entry["Message"] as? String ?? "")
        }
        return result
    }

    /// A JSON-protocol error: `{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"..."}`,
    /// or the legacy query error code in the `x-amzn-query-error` header.
    public struct ServiceError: Sendable, Equatable, CustomStringConvertible {
        public var status: Int
        public var code: String
        public var message: String

        public init(status: Int, code: String, message: String) {
            self.status = status
            self.code = code
            self.message = message
        }

        public var description: String { "HTTP \(status) \(code): \(message)" }

        public enum Kind: Sendable, Equatable {
            /// The queue is not there (refresh the URL; create it or dead-letter).
            case queueDoesNotExist
            /// Credentials or signature refused: pause the sink, never dead-letter.
            case credentials
            /// Throttling or a server-side failure: retry with backoff.
            case retryable
            /// The request itself is wrong for this queue: dead-letter.
            case permanent
        }

        public var kind: Kind {
            switch code {
            case "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", "NonExistentQueue":
                return .queueDoesNotExist
            case "InvalidClientTokenId", "SignatureDoesNotMatch", "AccessDenied", "AccessDeniedException",
                "ExpiredToken",
                "ExpiredTokenException", "UnrecognizedClientException", "IncompleteSignature",
                "MissingAuthenticationToken",
                "InvalidSecurity", "RequestExpired":
                return .credentials
            case "ThrottlingException", "RequestThrottled", "Throttling", "ServiceUnavailable", "InternalError",
                "KmsThrottled", "AWS.SimpleQueueService.RequestThrottled":
                return .retryable
            default:
                if status == 401 || status == 403 { return .credentials }
                return status == 429 || status >= 500 ? .retryable : .permanent
            }
        }
    }

    public static func parseError(status: Int, body: [UInt8], queryErrorHeader: String?) -> ServiceError {
        let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:]
        var code = (object["__type"] as? String ?? object["code"] as? String ?? "")
        if let hash = code.lastIndex(of: "#") { code = String(code[code.index(after: hash)...]) }
        if let header = queryErrorHeader, let legacy = header.split(separator: ";").first, !legacy.isEmpty,
            code.isEmpty || legacy.hasPrefix("AWS.SimpleQueueService.")
        {
            code = String(legacy)
        }
        // Some servers (and AWS's query protocol) answer errors in XML: <Code>…</Code><Message>…</Message>.
        let text = String(decoding: body.prefix(4096), as: UTF8.self)
        if code.isEmpty, let xmlCode = xmlElement("Code", in: text) { code = xmlCode }
        if code.isEmpty { code = "HTTP\(status)" }
        let message =
            object["message"] as? String ?? object["Message"] as? String ?? xmlElement("Message", in: text)
            ?? String(text.prefix(200))
        return ServiceError(status: status, code: code, message: message)
    }

    static func xmlElement(_ name: String, in text: String) -> String? {
        guard let open = text.range(of: "<\(name)>"),
            let close = text.range(of: "</\(name)>", range: open.upperBound..<text.endIndex)
        else { return nil }
        return String(text[open.upperBound..<close.lowerBound])
    }

    public static func parseQueueURL(_ body: [UInt8]) -> String? {
        (try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])?["QueueUrl"] as? String
    }
}
