import SinkdCore

/// One response line of the ingest protocol, and its JSON encoding (newline included).
public enum IngestResponse: Sendable, Equatable {
    case accepted(id: String, seq: UInt64)
    case duplicate(id: String, seq: UInt64)
    case rejected(IngestRejection)
    /// The answer to `{"query":"queueTypes"}`.
    case queueTypes([String])

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
        case .queueTypes(let types):
            out.append(contentsOf: #"null,"status":"answer","query":"queueTypes","queueTypes":["#.utf8)
            for (i, t) in types.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                JSONText.appendString(t, to: &out)
            }
            out.append(UInt8(ascii: "]"))
        }
        out.append(contentsOf: "}\n".utf8)
    }
}
