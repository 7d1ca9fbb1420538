package com.netflix.conductor.core.events.queue;

// Compile-only stand-in (never packaged); upstream: see conductor-plugin/STANDINS.md.
public class Message {
    private String payload;
    private String id;
    private String receipt;
    private int priority;

    public Message() {}

    public Message(String id, String payload, String receipt) {
        this(id, payload, receipt, 0);
    }

    public Message(String id, String payload, String receipt, int priority) {
        this.id = id;
        this.payload = payload;
        this.receipt = receipt;
        this.priority = priority;
    }

    public String getPayload() { return payload; }
    public void setPayload(String payload) { this.payload = payload; }
    public String getId() { return id; }
    public void setId(String id) { this.id = id; }
    public String getReceipt() { return receipt; }
    public void setReceipt(String receipt) { this.receipt = receipt; }
    public int getPriority() { return priority; }
    public void setPriority(int priority) { this.priority = priority; }
}
