// Following a fleet run (a batch) to its end: `cmdcast run SERVER @GROUP ...` once the POST is
// answered, and `cmdcast watch SERVER BATCH_ID`.
#pragma once

#include <string>

#include "cli.hpp"
#include "cmdcast/client_net/connection.hpp"
#include "cmdcast/common/protocol.hpp"

namespace cmdcast::cli {

/// Streams every execution of `batch` over WS /batches/{id}/stream (resuming each from its own
/// seq when the connection drops; long-polling GET /batches/{id}/events where upgrades do not
/// get through): each line as "machine | line", stdout to stdout and stderr to stderr, a colour
/// per machine on a terminal, and on a terminal a progress line per running machine kept at the
/// bottom of stdout. Ctrl-C cancels the batch; a second one detaches. Ends with the summary table
/// on stderr; returns the exit status (batch_exit_status; 2 for a request error or a refused
/// certificate, 130 when detached).
int follow_batch(const client_net::connector& server, const invocation& inv, const common::batch_record& batch);

}  // namespace cmdcast::cli
