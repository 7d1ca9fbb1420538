public enum SinkdVersion {
    /// Bumped with each release; `sinkd version` prints it with the schema version it reads.
    public static let version = "0.1.0"
    public static let configSchema = 1
}
