/// Keeps `used`, emptied, as `spare` for the next use when it holds room for at most
/// `maxCapacity` elements and for more than `spare` already does; `used` is left with what
/// `spare` held. The WAL's round arrays and a pipeline's completion arrays are reused this way
/// (issue 30: fresh ones were heap calls per round or batch, per record at Conductor's pace).
/// Inlinable so that it is specialized where it is used (unspecialized, a generic across modules
/// allocates).
@inlinable
public func keepForReuse<T>(_ used: inout [T], as spare: inout [T], maxCapacity: Int) {
    guard used.capacity <= maxCapacity, used.capacity > spare.capacity else { return }
    used.removeAll(keepingCapacity: true)
    swap(&used, &spare)
}

/// The kept array (empty), or a new one; none is left kept.
@inlinable
public func takeSpare<T>(_ spare: inout [T]) -> [T] {
    var taken: [T] = []
    swap(&taken, &spare)
    return taken
}
