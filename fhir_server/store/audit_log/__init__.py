"""The audit log: AuditEvents (R16) in a store of their own, beside the resource store.

AuditEvents are the most written and least read resources of the server: every read of a
record writes one, and only the patient's trace view and auditors read them back. Stored
like any resource (a row, a history row and some 24 index rows in the resource B-trees,
under the resource store's write lock) they cost an audited read four times its unaudited
cost. Here each event is one narrow row in a log of its own (its own SQLite file, or its own
MongoDB collections) with its own lock and group commit:

    sequence | id | recorded | chain hash | agent | action | subtype | outcome | labels | bytes

plus one key row per patient whose compartment holds it, the only secondary index. Searches
narrow by patient through that index and decide every other criterion on the events' own
index entries (`search.evaluate`, the engines' reference semantics), so an AuditEvent search
answers exactly what the resource store answered (`audit_log.search`).

How a write's events stay atomic with the write, across two stores (`store.with_audit_log`):
the write transaction stages its events in a small outbox of the resource store (one row
each, no index); once it has committed, they are appended to the log and the outbox rows are
cleared later. After a crash between the two commits, opening the store appends to the log
every outbox event it does not hold yet, in outbox order (idempotent by event id).
"""
