/// One response line of the ingest protocol, and its JSON encoding (newline included).
public enum IngestResponse: Sendable, Equatable {
    case accepted(id: String, seq: UInt64)
    case duplicate(id: String, seq: UInt64)
    case rejected(IngestRejection)

    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64)
        encode(into: &out)
        return out
    }

    public func encode(into out: inout [UInt8]) {
        out.append(contentsOf: #"{"id":"#.utf8)
        switch self {
        case .accepted(let id, let seq), .duplicate(let id, let seq):
            JSONText.appendString(id, to: &out)
            if case .accepted = self {
                out.append(contentsOf: #","status":"accepted","seq":"#.utf8)
            } else {
                out.append(contentsOf: #","status":"duplicate","seq":"#.utf8)
            }
            out.append(contentsOf: String(seq).utf8)
        case .rejected(let r):
            if let id = r.id {
                JSONText.appendString(id, to: &out)
            } else {
                out.append(contentsOf: "null".utf8)
            }
            out.append(contentsOf: #","status":"rejected","code":"#.utf8)
            JSONText.appendString(r.code.rawValue, to: &out)
            out.append(contentsOf: #","retryable":"#.utf8)
            out.append(contentsOf: (r.code.retryable ? "true" : "false").utf8)
            out.append(contentsOf: #","error":"#.utf8)
            JSONText.appendString(r.message, to: &out)
        }
        out.append(contentsOf: "}\n".utf8)
    }
}

public enum JSONText {
    /// Appends `s` as a JSON string literal.
    public static func appendString(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): out.append(contentsOf: [0x5C, 0x22])
            case UInt8(ascii: "\\"): out.append(contentsOf: [0x5C, 0x5C])
            case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30, hex[Int(b >> 4)], hex[Int(b & 0xF)]])
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
