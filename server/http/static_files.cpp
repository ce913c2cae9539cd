#include "http/static_files.hpp"

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace cmdcast::server {

std::optional<static_file> read_static_file(const std::string& web_root, const std::vector<std::string>& path,
                                            bool accepts_gzip) {
  std::string rel;
  for (const auto& p : path) {
    if (p.empty() || p == ".." || p == "." || p.find('\0') != std::string::npos || p.find('/') != std::string::npos) {
      return std::nullopt;
    }
    rel += "/" + p;
  }
  if (rel.empty()) rel = "/index.html";
  const std::filesystem::path file = web_root + rel;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) return std::nullopt;
  const bool gzip = accepts_gzip && std::filesystem::is_regular_file(file.string() + ".gz", ec);
  std::ifstream in(gzip ? file.string() + ".gz" : file.string(), std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  static const std::map<std::string, std::string> types = {
      {".html", "text/html; charset=utf-8"}, {".js", "text/javascript"}, {".wasm", "application/wasm"},
      {".css", "text/css"},                  {".png", "image/png"},      {".json", "application/json"}};
  const auto type = types.find(file.extension().string());
  return static_file{ss.str(), type == types.end() ? "application/octet-stream" : type->second, gzip};
}

}  // namespace cmdcast::server
