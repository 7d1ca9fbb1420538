/// Increasing integers (a batch's queue indices, an ingest batch's answer slots) kept as a run,
/// its first element and count, until one breaks the run; then as a list. The usual case, one
/// unbroken run, costs no heap call; a collection either way.
public struct IncreasingRun<Element: FixedWidthInteger & Sendable>: RandomAccessCollection, Sendable {
    private var first: Element = 0
    private var runCount = 0
    private var list: [Element]?

    public init() {}

    /// `elements`, increasing, appended in order.
    public init(_ elements: some Sequence<Element>) {
        for element in elements { append(element) }
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { list?.count ?? runCount }

    public subscript(position: Int) -> Element {
        if let list { return list[position] }
        precondition(position >= 0 && position < runCount, "index out of range")
        return first + Element(position)
    }

    /// Appends `element`, greater than every element so far.
    public mutating func append(_ element: Element) {
        if list == nil {
            if runCount == 0 { first = element }
            if element == first + Element(runCount) {
                runCount += 1
                return
            }
            list = Array(first..<(first + Element(runCount)))
        }
        list!.append(element)
    }

    /// Exactly `start ..< start + count` (true when empty).
    public func isRun(from start: Element) -> Bool { list == nil && (runCount == 0 || first == start) }
}
