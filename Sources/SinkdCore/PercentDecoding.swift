/// `%XX` escapes in URL parts (user info, paths) and query values.
public enum PercentDecoding {
    /// The decoded text; nil when an escape is malformed or the bytes are not UTF-8.
    /// `plusAsSpace`: query values (`a+b` means `a b`); never in user info or paths, where a `+`
    /// (in a password, say) is itself.
    public static func decode(_ text: Substring, plusAsSpace: Bool = false) -> String? {
        guard text.contains("%") || (plusAsSpace && text.contains("+")) else { return String(text) }
        var bytes: [UInt8] = []
        var iterator = text.utf8.makeIterator()
        while let b = iterator.next() {
            switch b {
            case UInt8(ascii: "%"):
                guard let h = iterator.next(), let l = iterator.next(), let hi = hexValue(h), let lo = hexValue(l)
                else { return nil }
                bytes.append(hi << 4 | lo)
            case UInt8(ascii: "+") where plusAsSpace:
                bytes.append(UInt8(ascii: " "))
            default:
                bytes.append(b)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    public static func decode(_ text: String, plusAsSpace: Bool = false) -> String? {
        decode(Substring(text), plusAsSpace: plusAsSpace)
    }

    private static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
