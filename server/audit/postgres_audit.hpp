// The audit in PostgreSQL ([audit] postgres): one libpq connection driven asynchronously on the
// server's executor (PQconnectStart/PQconnectPoll, then pipeline mode, the socket awaited
// through Asio), shared by several servers, each owning its rows by `server_id`.
//
// While PostgreSQL cannot be reached the store is degraded: writes wait in a bounded queue
// in memory (64 MiB of output; past it the oldest queued output of an execution is
// dropped, and reading it back shows a gap there), the connection is tried again with
// backoff, reads answer empty at once. A write with no answer (a lock held elsewhere, a
// stopped backend) is cancelled after limits.statement_timeout and tried again on a new
// connection; the store is degraded until one gets through. Internal to server/audit: audit_store::open_postgres is
// the way in.
#pragma once

#include <memory>
#include <string>

#include "audit/audit_backend.hpp"

namespace cmdcast::server {

/// Checks `conninfo` (an error when libpq cannot parse it) and starts connecting on `executor`.
common::result<std::shared_ptr<audit_backend>> open_postgres_backend(const std::string& conninfo,
                                                                    const std::string& server_id,
                                                                    net::any_io_executor executor,
                                                                    postgres_limits limits = {});

}  // namespace cmdcast::server
