// The web client's files under web_root, as the server sends them: the gzip copy the build
// left beside a file when the browser takes gzip, and the content type by extension.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace cmdcast::server {

struct static_file {
  std::string body;
  std::string content_type;
  bool gzip = false;  // body is FILE.gz
};

/// The file at `path` (decoded segments; empty: index.html) under `web_root`, or nullopt when
/// there is none (or the path tries to leave the root).
std::optional<static_file> read_static_file(const std::string& web_root, const std::vector<std::string>& path,
                                            bool accepts_gzip);

}  // namespace cmdcast::server
