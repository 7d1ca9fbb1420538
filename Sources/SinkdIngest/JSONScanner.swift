import SinkdCore

// The JSON scanner behind RequestParser: one pass over a request line, validating it as RFC 8259
// JSON and taking out the fields sinkd needs. I/O-free.

/// The fields of a request that sinkd reads.
enum Field: String, CaseIterable {
    case id, sink, payload, workflowInstanceId, workflowType, workflowVersion, correlationId, taskRefName, priority
    /// The expanded form, as Conductor's EventQueueProvider sees a sink: `getQueueType()` and the URI
    /// `getQueue(uri)` receives (already expanded), instead of `sink`.
    case queueType, queueURI
    /// A question to sinkd instead of a record (`{"query":"queueTypes"}`).
    case query

    static let names: [(bytes: [UInt8], field: Field)] = allCases.map { (Array($0.rawValue.utf8), $0) }

    /// The field a raw (escape-free) key names, compared byte for byte without making a String.
    static func matching(_ key: UnsafeRawBufferPointer) -> Field? {
        for (bytes, field) in names where bytes.count == key.count && bytes.elementsEqual(key) {
            return field
        }
        return nil
    }

    var index: Int { Self.allCases.firstIndex(of: self)! }
}

/// The values of the known fields, by field.
/// Inline storage, not an array: an array was a heap call per request line.
struct FieldValues {
    /// As many as `Field` has cases (FieldValuesTests checks).
    static let capacity = 12
    private var storage = InlineArray<12, JSONScanner.Value?>(repeating: nil)
    subscript(_ field: Field) -> JSONScanner.Value? {
        get { storage[field.index] }
        set { storage[field.index] = newValue }
    }
}

struct JSONScanner {
    let bytes: UnsafeRawBufferPointer
    var i = 0
    var id: String?

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    struct Malformed: Error {
        var offset: Int
        var expected: String
    }

    mutating func parseRequest() -> Result<EventRecord, IngestRejection> {
        parseLine().flatMap { request in
            switch request {
            case .record(let record): .success(record)
            case .query:
                .failure(
                    IngestRejection(
                        .invalidField, "a query ('query') is a question to sinkd's ingest socket, not a record"))
            }
        }
    }

    mutating func parseLine() -> Result<IngestRequest, IngestRejection> {
        var values = FieldValues()
        do {
            skipWhitespace()
            guard i < bytes.count else { throw Malformed(offset: i, expected: "a JSON object, got an empty line") }
            guard bytes[i] == UInt8(ascii: "{") else {
                // Say what it is if it is valid JSON, else where it stops being JSON.
                let kind = try value(depth: 1)
                skipWhitespace()
                guard i == bytes.count else {
                    throw Malformed(offset: i, expected: "the end of the line after the JSON value")
                }
                return .failure(IngestRejection(.malformed, "a request must be a JSON object, got \(kind.description)"))
            }
            try object(depth: 1) { scanner, member in
                let rawKey = UnsafeRawBufferPointer(
                    rebasing: scanner.bytes[(member.keyStart + 1)..<(member.keyEnd - 1)])
                guard let field = Field.matching(rawKey) ?? member.key.decoded.flatMap(Field.init(rawValue:)) else {
                    return
                }
                if values[field] != nil {
                    throw IngestRejection(
                        .invalidField, "field '\(field.rawValue)' appears more than once (at byte \(member.keyStart))",
                        id: scanner.id)
                }
                let string = member.kind == .string ? scanner.stringValue(member.value.lowerBound) : nil
                values[field] = Value(kind: member.kind, range: member.value, string: string)
                if field == .id, member.kind == .string { scanner.id = string?.decoded }
            }
            skipWhitespace()
            guard i == bytes.count else {
                throw Malformed(offset: i, expected: "the end of the line after the JSON object")
            }
        } catch let rejection as IngestRejection {
            return .failure(rejection)
        } catch let m as Malformed {
            return .failure(
                IngestRejection(.malformed, "malformed JSON at byte \(m.offset): expected \(m.expected)", id: id))
        } catch let u as InvalidUTF8 {
            return .failure(IngestRejection(.malformed, "invalid UTF-8 at byte \(u.offset)", id: id))
        } catch {
            return .failure(IngestRejection(.malformed, "malformed JSON: \(error)", id: id))
        }
        if let query = values[.query] { return self.query(query, values) }
        return build(values).map(IngestRequest.record)
    }

    /// `{"query":NAME}` and nothing else sinkd reads.
    private func query(_ value: Value, _ values: FieldValues) -> Result<IngestRequest, IngestRejection> {
        if let other = Field.allCases.first(where: { $0 != .query && values[$0] != nil }) {
            return .failure(
                IngestRejection(
                    .invalidField,
                    "a query takes no record fields, but '\(other.rawValue)' is given: send records and queries as separate lines",
                    id: id))
        }
        guard value.kind == .string, let name = value.string?.decoded else {
            return .failure(
                IngestRejection(
                    .invalidField,
                    "field 'query' must be a string naming the question (known: \(IngestQuery.knownList)), got \(value.kind.description)"
                ))
        }
        guard let query = IngestQuery(rawValue: name) else {
            return .failure(
                IngestRejection(.invalidField, "unknown query '\(name.prefix(64))' (known: \(IngestQuery.knownList))"))
        }
        return .success(.query(query))
    }

    private func build(_ values: FieldValues) -> Result<EventRecord, IngestRejection> {
        func text(_ field: Field, required: Bool, maxBytes: Int) -> Result<String?, IngestRejection> {
            guard let v = values[field], v.kind != .null || required else { return .success(nil) }
            guard v.kind == .string, let s = v.string else {
                return .failure(
                    IngestRejection(
                        .invalidField, "field '\(field.rawValue)' must be a string, got \(v.kind.description)", id: id))
            }
            guard let decoded = s.decoded else {
                return .failure(
                    IngestRejection(
                        .invalidField, "field '\(field.rawValue)' contains an unpaired UTF-16 surrogate escape", id: id)
                )
            }
            let n = decoded.utf8.count
            if required, n == 0 {
                return .failure(IngestRejection(.invalidField, "field '\(field.rawValue)' must not be empty", id: id))
            }
            guard n <= maxBytes else {
                return .failure(
                    IngestRejection(
                        .invalidField, "field '\(field.rawValue)' is \(n) bytes long; at most \(maxBytes) are allowed",
                        id: id))
            }
            // These fields travel as protocol headers and properties (HTTP headers, NATS headers
            // and subjects, AMQP properties, SQS attributes, PostgreSQL text), where a control
            // character is refused or splits the message: such a record could never be delivered.
            if decoded.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F || $0 == 0xC2 }),
                let (offset, scalar) = decoded.unicodeScalars.enumerated().first(where: {
                    RequestParser.isControl($0.element)
                })
            {
                let hex = String(scalar.value, radix: 16, uppercase: true)
                let code = "U+" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
                return .failure(
                    IngestRejection(
                        .invalidField,
                        "field '\(field.rawValue)' contains the control character \(code) at character \(offset + 1); ids, sinks and context fields are sent as protocol headers and properties, where control characters cannot go: remove it",
                        id: id))
            }
            return .success(decoded)
        }
        func integer(_ field: Field, range: ClosedRange<Int64>) -> Result<Int64?, IngestRejection> {
            guard let v = values[field], v.kind != .null else { return .success(nil) }
            let raw = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[v.range]), as: UTF8.self)
            guard v.kind == .number, let n = Int64(raw) else {
                return .failure(
                    IngestRejection(
                        .invalidField,
                        "field '\(field.rawValue)' must be an integer, got \(v.kind == .number ? raw : v.kind.description)",
                        id: id))
            }
            guard range.contains(n) else {
                return .failure(
                    IngestRejection(
                        .invalidField,
                        "field '\(field.rawValue)' must be from \(range.lowerBound) to \(range.upperBound), got \(n)",
                        id: id))
            }
            return .success(n)
        }
        let expanded = values[.queueType] != nil || values[.queueURI] != nil
        if expanded, values[.sink] != nil {
            return .failure(
                IngestRejection(
                    .invalidField,
                    "give either 'sink' (as the EVENT task names it) or 'queueType' and 'queueURI' (as an event queue provider sees it, already expanded), not both",
                    id: id))
        }
        if expanded, values[.queueType] == nil || values[.queueURI] == nil {
            let missing = values[.queueType] == nil ? "queueType" : "queueURI"
            return .failure(
                IngestRejection(
                    .missingField,
                    "missing field '\(missing)': the expanded form needs both 'queueType' (e.g. \"conductor\", \"sqs\") and 'queueURI' (e.g. \"order_flow:notify_ref\")",
                    id: id))
        }
        for field in [Field.id, .sink, .payload] where values[field] == nil && !(field == .sink && expanded) {
            let what =
                switch field {
                case .id: "the message id (Conductor's taskId)"
                case .sink: "where to forward the record, e.g. \"sqs:orders\""
                default: "the message body to forward (any JSON value)"
                }
            return .failure(IngestRejection(.missingField, "missing field '\(field.rawValue)': \(what)", id: id))
        }
        do {
            guard let id = try text(.id, required: true, maxBytes: 255).get() else {
                throw IngestRejection(.missingField, "missing field 'id'")
            }
            let sink: String
            if expanded {
                guard let type = try text(.queueType, required: true, maxBytes: 64).get(),
                    let uri = try text(.queueURI, required: true, maxBytes: RequestParser.maxSinkBytes - 65).get()
                else { throw IngestRejection(.missingField, "missing field 'queueType' or 'queueURI'", id: id) }
                sink = type + ":" + uri
            } else {
                guard let raw = try text(.sink, required: true, maxBytes: RequestParser.maxSinkBytes).get() else {
                    throw IngestRejection(.missingField, "missing field 'sink'", id: id)
                }
                sink = raw
            }
            var request = EventRecord(
                id: id, sink: sink, payload: Array(UnsafeRawBufferPointer(rebasing: bytes[values[.payload]!.range])))
            request.sinkIsExpanded = expanded
            request.workflowInstanceId = try text(
                .workflowInstanceId, required: false, maxBytes: RequestParser.maxContextBytes
            ).get()
            request.workflowType = try text(.workflowType, required: false, maxBytes: RequestParser.maxContextBytes)
                .get()
            request.correlationId = try text(.correlationId, required: false, maxBytes: RequestParser.maxContextBytes)
                .get()
            request.taskRefName = try text(.taskRefName, required: false, maxBytes: RequestParser.maxContextBytes).get()
            request.workflowVersion = try integer(.workflowVersion, range: Int64.min...Int64.max).get()
            request.priority = try integer(.priority, range: 0...99).get().map { UInt8($0) }
            return .success(request)
        } catch let rejection as IngestRejection {
            return .failure(rejection)
        } catch {
            return .failure(IngestRejection(.internal, "\(error)", id: id))
        }
    }

    // MARK: JSON grammar

    enum Kind: Equatable {
        case object, array, string, number, bool, null
        var description: String {
            switch self {
            case .object: "an object"
            case .array: "an array"
            case .string: "a string"
            case .number: "a number"
            case .bool: "a boolean"
            case .null: "null"
            }
        }
    }

    struct Value {
        var kind: Kind
        var range: Range<Int>
        var string: DecodedString?
    }

    /// A string value: `decoded` is nil when it held an unpaired surrogate escape.
    struct DecodedString {
        var decoded: String?
    }

    struct InvalidUTF8: Error {
        var offset: Int
    }

    func peek() -> UInt8? { i < bytes.count ? bytes[i] : nil }

    mutating func skipWhitespace() {
        while i < bytes.count {
            switch bytes[i] {
            case 0x20, 0x09, 0x0A, 0x0D: i += 1
            default: return
            }
        }
    }

    /// Re-decodes the string that starts at `start` (already validated).
    func stringValue(_ start: Int) -> DecodedString {
        var copy = self
        copy.i = start
        return (try? copy.string()) ?? DecodedString(decoded: nil)
    }

    mutating func value(depth: Int) throws -> Kind {
        guard depth <= RequestParser.maxDepth else {
            throw Malformed(offset: i, expected: "nesting at most \(RequestParser.maxDepth) levels deep")
        }
        guard let c = peek() else { throw Malformed(offset: i, expected: "a value") }
        switch c {
        case UInt8(ascii: "{"):
            try object(depth: depth, nil)
            return .object
        case UInt8(ascii: "["):
            i += 1
            skipWhitespace()
            if peek() == UInt8(ascii: "]") {
                i += 1
                return .array
            }
            while true {
                skipWhitespace()
                _ = try value(depth: depth + 1)
                skipWhitespace()
                if peek() == UInt8(ascii: ",") {
                    i += 1
                    continue
                }
                guard peek() == UInt8(ascii: "]") else {
                    throw Malformed(offset: i, expected: "',' or ']' in an array")
                }
                i += 1
                return .array
            }
        case UInt8(ascii: "\""):
            _ = try string(decode: false)  // validated here; decoded later only if a field needs it
            return .string
        case UInt8(ascii: "t"):
            try literal("true")
            return .bool
        case UInt8(ascii: "f"):
            try literal("false")
            return .bool
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            try number()
            return .number
        default:
            if c >= 0x80 { try checkUTF8Sequence() }
            throw Malformed(offset: i, expected: "a value (object, array, string, number, true, false or null)")
        }
    }

    struct Member {
        var key: DecodedString
        var keyStart: Int
        var keyEnd: Int
        var value: Range<Int>
        var kind: Kind
    }

    /// Parses the object at `i` (at its '{'), calling `visit` for each member of this level.
    mutating func object(depth: Int, _ visit: ((inout JSONScanner, Member) throws -> Void)?) throws {
        i += 1
        skipWhitespace()
        if peek() == UInt8(ascii: "}") {
            i += 1
            return
        }
        while true {
            skipWhitespace()
            guard peek() == UInt8(ascii: "\"") else {
                throw Malformed(offset: i, expected: "'\"' to start an object key")
            }
            let keyStart = i
            // Keys are decoded only where a visitor reads them (the request's top level).
            let key = try string(decode: visit != nil)
            let keyEnd = i
            skipWhitespace()
            guard peek() == UInt8(ascii: ":") else { throw Malformed(offset: i, expected: "':' after an object key") }
            i += 1
            skipWhitespace()
            let valueStart = i
            let kind = try value(depth: depth + 1)
            try visit?(&self, Member(key: key, keyStart: keyStart, keyEnd: keyEnd, value: valueStart..<i, kind: kind))
            skipWhitespace()
            if peek() == UInt8(ascii: ",") {
                i += 1
                continue
            }
            guard peek() == UInt8(ascii: "}") else {
                throw Malformed(offset: i, expected: "',' or '}' after an object member")
            }
            i += 1
            return
        }
    }

    mutating func literal(_ word: StaticString) throws {
        let n = word.utf8CodeUnitCount
        guard i + n <= bytes.count else { throw Malformed(offset: i, expected: "'\(word)'") }
        for k in 0..<n where bytes[i + k] != word.utf8Start[k] {
            throw Malformed(offset: i, expected: "'\(word)'")
        }
        i += n
    }

    mutating func number() throws {
        let start = i
        if peek() == UInt8(ascii: "-") { i += 1 }
        guard let first = peek(), first >= UInt8(ascii: "0"), first <= UInt8(ascii: "9") else {
            throw Malformed(offset: i, expected: "a digit in a number")
        }
        if first == UInt8(ascii: "0") {
            i += 1
        } else {
            while let d = peek(), d >= UInt8(ascii: "0"), d <= UInt8(ascii: "9") { i += 1 }
        }
        if peek() == UInt8(ascii: ".") {
            i += 1
            guard let d = peek(), d >= UInt8(ascii: "0"), d <= UInt8(ascii: "9") else {
                throw Malformed(offset: i, expected: "a digit after '.'")
            }
            while let d = peek(), d >= UInt8(ascii: "0"), d <= UInt8(ascii: "9") { i += 1 }
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            i += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { i += 1 }
            guard let d = peek(), d >= UInt8(ascii: "0"), d <= UInt8(ascii: "9") else {
                throw Malformed(offset: i, expected: "a digit in an exponent")
            }
            while let d = peek(), d >= UInt8(ascii: "0"), d <= UInt8(ascii: "9") { i += 1 }
        }
        _ = start
    }

    /// Validates a string starting at the opening quote and, when `decode`, decodes it
    /// (without, `decoded` is nil: payload strings need validation, not a copy).
    mutating func string(decode: Bool = true) throws -> DecodedString {
        i += 1  // opening quote
        let start = i
        var hasEscapes = false
        while i < bytes.count {
            skipPlainASCII()
            guard i < bytes.count else { break }
            let c = bytes[i]
            if c == UInt8(ascii: "\"") {
                let raw = UnsafeRawBufferPointer(rebasing: bytes[start..<i])
                i += 1
                if !decode { return DecodedString(decoded: nil) }
                if !hasEscapes { return DecodedString(decoded: String(decoding: raw, as: UTF8.self)) }
                return DecodedString(decoded: Self.unescape(raw))
            }
            if c == UInt8(ascii: "\\") {
                hasEscapes = true
                i += 1
                guard let e = peek() else { break }
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                    UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    i += 1
                case UInt8(ascii: "u"):
                    i += 1
                    for _ in 0..<4 {
                        guard let h = peek(), Self.hex(h) != nil else {
                            throw Malformed(offset: i, expected: "four hex digits after \\u")
                        }
                        i += 1
                    }
                default:
                    throw Malformed(offset: i, expected: "a valid escape (\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)")
                }
                continue
            }
            if c < 0x20 { throw Malformed(offset: i, expected: "no raw control character inside a string (escape it)") }
            if c >= 0x80 {
                try checkUTF8Sequence()
                continue
            }
            i += 1
        }
        throw Malformed(offset: bytes.count, expected: "'\"' to close the string that starts at byte \(start - 1)")
    }

    /// Moves `i` past bytes that need no attention inside a string (printable ASCII other than
    /// '"' and '\\'), eight at a time: payload strings are most of what ingest reads.
    @inline(__always) mutating func skipPlainASCII() {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        while i + 8 <= bytes.count {
            let w = bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            let quote = w ^ (ones &* 0x22)
            let backslash = w ^ (ones &* 0x5C)
            // A byte is zero (haszero), below 0x20 (hasless) or at least 0x80 (high bit).
            let special =
                ((quote &- ones) & ~quote) | ((backslash &- ones) & ~backslash) | ((w &- ones &* 0x20) & ~w) | w
            guard special & highs == 0 else { return }
            i += 8
        }
    }

    /// Validates one multi-byte UTF-8 sequence at `i` (RFC 3629: no overlongs, no surrogates,
    /// nothing above U+10FFFF) and moves past it.
    mutating func checkUTF8Sequence() throws {
        let b0 = bytes[i]
        let (length, low, high): (Int, UInt8, UInt8)
        switch b0 {
        case 0xC2...0xDF: (length, low, high) = (2, 0x80, 0xBF)
        case 0xE0: (length, low, high) = (3, 0xA0, 0xBF)
        case 0xE1...0xEC, 0xEE...0xEF: (length, low, high) = (3, 0x80, 0xBF)
        case 0xED: (length, low, high) = (3, 0x80, 0x9F)
        case 0xF0: (length, low, high) = (4, 0x90, 0xBF)
        case 0xF1...0xF3: (length, low, high) = (4, 0x80, 0xBF)
        case 0xF4: (length, low, high) = (4, 0x80, 0x8F)
        default: throw InvalidUTF8(offset: i)
        }
        guard i + length <= bytes.count else { throw InvalidUTF8(offset: i) }
        let b1 = bytes[i + 1]
        guard b1 >= low, b1 <= high else { throw InvalidUTF8(offset: i) }
        for k in 2..<max(2, length) {
            let b = bytes[i + k]
            guard b >= 0x80, b <= 0xBF else { throw InvalidUTF8(offset: i) }
        }
        i += length
    }

    static func hex(_ c: UInt8) -> UInt32? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt32(c - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt32(c - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt32(c - UInt8(ascii: "A") + 10)
        default: nil
        }
    }

    /// Decodes escapes of an already validated string body; nil for an unpaired surrogate.
    static func unescape(_ raw: UnsafeRawBufferPointer) -> String? {
        var out: [UInt8] = []
        out.reserveCapacity(raw.count)
        var k = 0
        func hex4(_ at: Int) -> UInt32 {
            (0..<4).reduce(0) { $0 << 4 | hex(raw[at + $1])! }
        }
        while k < raw.count {
            let c = raw[k]
            guard c == UInt8(ascii: "\\") else {
                out.append(c)
                k += 1
                continue
            }
            let e = raw[k + 1]
            k += 2
            switch e {
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = hex4(k)
                k += 4
                if scalar >= 0xD800, scalar <= 0xDBFF {
                    guard k + 6 <= raw.count, raw[k] == UInt8(ascii: "\\"), raw[k + 1] == UInt8(ascii: "u") else {
                        return nil
                    }
                    let low = hex4(k + 2)
                    guard low >= 0xDC00, low <= 0xDFFF else { return nil }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    k += 6
                } else if scalar >= 0xDC00, scalar <= 0xDFFF {
                    return nil
                }
                guard let u = Unicode.Scalar(scalar) else { return nil }
                out.append(contentsOf: Array(String(Character(u)).utf8))
            default: out.append(e)  // " \ /
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
