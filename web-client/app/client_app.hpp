// The client's model and behaviour, shared by the web and desktop shells and drawn by ui.cpp:
// the machines and their actions, the recent executions, and the one execution being watched,
// kept live over a WebSocket, or by long-polling where there is no WebSocket or the upgrade
// fails ("polling (degraded)"), reconnecting after blips and idle closes with `after` so that
// nothing is lost or shown twice. A fleet run (batch) is shown instead of one execution: its
// record and its stream (or polling twin), every machine's events in a batch_view.
// Single-threaded: the UI thread calls everything.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "app/batch_view.hpp"
#include "app/presentation.hpp"
#include "app/transport.hpp"
#include "cmdcast/common/execution_view.hpp"
#include "cmdcast/common/protocol.hpp"

namespace cmdcast::client {

enum class link_mode { websocket, polling, disconnected };
std::string_view to_string(link_mode m);

class client_app {
 public:
  explicit client_app(transport& t);
  ~client_app();

  // --- Inputs -----------------------------------------------------------------------------
  /// Loads who we are, the machines and the executions (with `token`, if any); opens `route`
  /// (a deep link such as "#/executions/ID" or "#/machines/ID", or empty).
  void start(const std::string& route, const std::string& token = "");
  void set_token(const std::string& token);
  /// Opens a deep link (the web shell calls it when the location's hash changes).
  void open_route(const std::string& route);
  /// Timers: reconnects and list refreshes. `now` in seconds, any steady origin.
  void tick(double now);
  void run(const std::string& machine_id, const std::string& action, const std::map<std::string, std::string>& params);
  void attach(const std::string& execution_id);
  void cancel();
  /// Approves or rejects the watched execution (an operator other than its requester).
  void approve();
  void reject();
  /// Highlights lines of the watched execution (1-based line numbers, as links name them),
  /// shown in the route: "#/executions/ID/L5-L9". `scroll`: the output is to go there (a
  /// link opened), not only mark it (a line picked on screen). Empty: no highlight.
  void set_line_link(std::optional<line_range> lines, bool scroll);
  void refresh_executions();

  // --- Fleet runs (batches) ---------------------------------------------------------------
  /// Runs an action on every machine of a group (POST /groups/{group}/commands), then shows
  /// the batch. `parallel`: at most this many at once (empty: all).
  void run_group(const std::string& group, const std::string& action, const std::map<std::string, std::string>& params,
                 std::optional<std::int64_t> parallel, bool stop_on_failure);
  /// Shows a batch: a row per machine, kept live over the batch stream (or its polling twin),
  /// each execution resuming from its own seq after a reconnect.
  void open_batch(const std::string& batch_id);
  /// Opens a machine's output beside the grid (its execution id; empty closes it). The output
  /// is the member's view, fed by the batch stream from the batch's start: nothing is missed.
  void open_batch_member(const std::string& execution_id);
  void set_batch_filter(batch_filter f) { filter_ = f; }
  batch_filter filter() const { return filter_; }
  /// Cancels every execution of the shown batch that has not ended.
  void cancel_batch();
  /// Runs the batch's action again on its failed machines: a new batch of just those (the group
  /// run with `machines`), shown in place of this one; from a server without that field, one
  /// ordinary run per machine, which rerun() lists.
  void rerun_failed();
  bool can_rerun_failed() const;
  struct rerun_item {
    std::string machine_id, execution_id, error;
  };
  const std::vector<rerun_item>& rerun() const { return rerun_; }
  const batch_view* batch() const { return batch_.get(); }
  const std::string& batch_member() const { return batch_member_; }
  /// The groups the machines are in (GET /machines `groups`), sorted, and a group's machines.
  std::vector<std::string> groups() const;
  std::vector<const common::machine_info*> group_machines(const std::string& group) const;
  /// The actions every machine of the group has (a group run needs the action on each).
  std::vector<const common::action_info*> group_actions(const std::string& group) const;

  // --- What the UI shows ------------------------------------------------------------------
  const std::vector<common::machine_info>& machines() const { return machines_; }
  const std::vector<common::execution_record>& executions() const { return executions_; }
  const std::string& selected_machine() const { return selected_machine_; }
  void select_machine(const std::string& id);
  /// The watched execution, if any: in a batch, the machine whose output is open.
  const common::execution_view* view() const {
    return batch_ ? batch_->member(batch_member_) : view_.get();
  }
  link_mode mode() const { return mode_; }
  /// The last error to show (a refused run, an unreachable server), empty when none.
  const std::string& error() const { return error_; }
  bool needs_token() const { return needs_token_; }
  bool can_run() const { return role_ == "operator"; }
  const std::string& user() const { return user_; }
  const std::string& token() const { return token_; }
  /// The route of what is on screen, for the address bar ("#/executions/ID", with "/L5" or
  /// "/L5-L9" while lines are highlighted).
  const std::string& route() const { return route_; }
  /// The highlighted lines, and a count that changes each time the output is to scroll to them.
  const std::optional<line_range>& line_link() const { return line_link_; }
  std::uint64_t line_link_scrolls() const { return line_link_scrolls_; }
  /// The watched execution's record (GET /executions/{id}, kept fresh by the list), if known.
  const std::optional<common::execution_record>& record() const { return record_; }
  /// Its action and machine (the machine's name, not its id), from its events or its record;
  /// empty until known.
  std::string watched_action() const;
  std::string watched_machine() const;
  /// Waiting to run: queued, or awaiting approval (from its events, else its record).
  bool waiting() const;
  /// Who asked for the watched execution, when it awaits approval (empty otherwise).
  std::string approval_requester() const;
  /// Whether this user may approve or reject it: an operator other than the requester.
  bool can_approve() const;
  /// The window title: "⟳ 42% apt_upgrade · pihole", "✓ ...", "✗ ...", "⏸ ..."; empty
  /// when nothing is watched.
  std::string title() const;
  /// Once, when a run watched while it ran has ended: "apt_upgrade on pihole: exited 0 (1m12s)".
  std::optional<std::string> take_finish_notice();
  /// Told at once, from the event that caused it, rather than at the next frame: a browser
  /// draws no frames in a hidden tab, where the title and the notification matter most.
  /// on_finish takes the notice instead of take_finish_notice(); on_title gets title()
  /// whenever it changes.
  std::function<void(const std::string&)> on_finish;
  std::function<void(const std::string&)> on_title;
  /// The download of the watched execution's output (format text, ansi or ndjson).
  std::string output_path(const std::string& format) const;
  /// Fetches it through the transport (the desktop; the browser downloads itself).
  void download(const std::string& format, std::function<void(http_answer)> done);
  double now() const { return now_; }

  /// Changes whenever what the UI would show does (output, events, lists, connection, errors):
  /// a shell redraws only then, or on input.
  std::uint64_t revision() const;
  /// Whether something on screen moves by itself (a busy bar, a reconnect in progress).
  bool animating() const;

  /// What the user sees, as JSON (window.cmdcast.state() in the web build).
  std::string state_json() const;

 private:
  void load_lists();
  void connect();
  void connect_socket(const std::string& path, std::optional<std::string> first_message);
  void poll();
  void on_event_text(const std::string& text);
  void apply_event_text(const std::string& text);
  void on_socket_closed(int code, const std::string& reason);
  void schedule_retry();
  /// The stream ended without an exit: asks for the record and ends the view from it when the
  /// execution is over, or tries again.
  void end_from_record();
  /// Posts the pending run; `fallback`: the WebSocket failed, so the execution is polled.
  void post_run(bool fallback = true);
  void fail(const std::string& message);
  bool unauthorized(const http_answer& a);
  void show_execution(const std::string& id);
  /// Applies an event to the view, noting an end seen live (for the notice).
  void apply_to_view(const common::event& e);
  void fetch_record();
  void decide(const std::string& what);
  void update_route();
  void note_finish(std::string notice);
  void title_may_change();
  std::string batch_json() const;
  void show_batch(const std::string& id);
  /// `resume`: the stream closed; reconnect if the batch still runs.
  void fetch_batch(bool resume = false);
  void poll_batch();
  void apply_batch_text(const std::string& text);
  void apply_to_batch(const common::tagged_event& t);
  void on_batch_socket_closed(int code, bool opened);
  /// Reads the open machine's events by its own poll when the batch stream had none of them.
  void fill_member();
  void rerun_one_by_one(const common::run_request& request, const std::vector<std::string>& machines);

  transport& transport_;
  std::vector<common::machine_info> machines_;
  std::vector<common::execution_record> executions_;
  std::string selected_machine_;
  std::string user_, role_, token_;
  bool needs_token_ = false;
  std::string error_;
  std::string route_;
  double now_ = 0;
  double next_list_refresh_ = 0;

  // The watched execution and how it is kept live.
  std::unique_ptr<common::execution_view> view_;
  std::unique_ptr<socket_handle> socket_;
  link_mode mode_ = link_mode::disconnected;
  bool socket_opened_ = false;   // the current socket got through its upgrade
  bool degraded_ = false;        // WebSocket failed or missing: this watch polls
  bool poll_in_flight_ = false;
  int attempts_ = 0;             // failed reconnects in a row
  double retry_at_ = -1;         // when to reconnect (-1: not scheduled)
  std::uint64_t generation_ = 0;  // callbacks of an older connection are ignored
  struct run_to_send {
    std::string machine;
    std::string action;
    std::string request;  // the run request's JSON
  };
  std::optional<run_to_send> pending_run_;
  std::optional<common::execution_record> record_;
  // The action and machine of the run this page just posted: the title names them before the
  // record (or a started event) arrives.
  std::optional<run_to_send> posted_run_;
  std::optional<line_range> line_link_;
  std::uint64_t line_link_scrolls_ = 0;
  bool seen_unfinished_ = false;  // the watched execution was seen before its end
  std::optional<std::string> finish_notice_;
  std::string last_title_;  // as on_title was last told
  // The shown batch (then view_ is empty), the machine whose output is open, the filter.
  std::unique_ptr<batch_view> batch_;
  std::string batch_member_;
  batch_filter filter_ = batch_filter::all;
  bool batch_seen_running_ = false;
  std::string filling_;  // the member fill_member() is reading
  std::vector<rerun_item> rerun_;
  // The run requests of the batches started here: a re-run needs secret values the record masks.
  std::map<std::string, common::run_request> batch_requests_;
  // Event bytes taken in, and the time spent decoding and applying them (benchmarks).
  std::uint64_t ingest_bytes_ = 0;
  double ingest_seconds_ = 0;
};

}  // namespace cmdcast::client
