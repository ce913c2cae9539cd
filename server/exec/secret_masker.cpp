#include "exec/secret_masker.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace cmdcast::server {

std::vector<std::string> secret_masker::patterns_of(std::vector<std::string> secrets) {
  std::vector<std::string> patterns;
  for (auto& s : secrets) {
    if (s.find_first_not_of('*') == std::string::npos) continue;  // empty, or only '*'
    if (s.find('*') != std::string::npos) {
      // Its longest run without '*': never in the output, so the value never is either.
      std::string_view longest_run;
      for (std::size_t at = 0; at < s.size();) {
        const std::size_t begin = s.find_first_not_of('*', at);
        if (begin == std::string::npos) break;
        const std::size_t end = std::min(s.find('*', begin), s.size());
        if (end - begin > longest_run.size()) longest_run = std::string_view(s).substr(begin, end - begin);
        at = end;
      }
      patterns.emplace_back(longest_run);
    }
    patterns.push_back(std::move(s));
  }
  std::sort(patterns.begin(), patterns.end(),
            [](const std::string& a, const std::string& b) { return a.size() != b.size() ? a.size() > b.size() : a < b; });
  patterns.erase(std::unique(patterns.begin(), patterns.end()), patterns.end());
  return patterns;
}

secret_masker::secret_masker(std::vector<std::string> secrets) : patterns_(patterns_of(std::move(secrets))) {
  for (std::size_t i = 0; i < patterns_.size(); ++i) {
    const std::string& p = patterns_[i];
    const auto first = static_cast<unsigned char>(p[0]);
    by_first_[first].push_back(static_cast<std::uint16_t>(i));
    first_[first] = true;
    longest_ = std::max(longest_, p.size());
    const filter f{first, static_cast<unsigned char>(p.back()), p.size() - 1};
    if (std::find(filters_.begin(), filters_.end(), f) == filters_.end()) filters_.push_back(f);
  }
#if defined(__SSE2__)
  simd_ = !filters_.empty();
#endif
}

void secret_masker::feed(std::string_view in, std::string& out) {
  if (!active()) {
    out.append(in);
    return;
  }
  std::size_t resume = 0;  // where the scan of `in` starts
  if (!held_.empty()) {
    // Decide the held starts with what follows them: at most longest_ bytes are needed.
    const std::size_t h = held_.size();
    joined_.assign(held_);
    joined_.append(in.substr(0, std::min(in.size(), longest_)));
    bool undecided = false;
    const std::size_t done = scan(joined_, 0, h, true, out, undecided);
    if (undecided) {
      // Only possible when all of `in` is in joined_ (a held start needs fewer than longest_ more).
      held_.assign(joined_, done);
      return;
    }
    held_.clear();
    resume = done - h;
  }
  bool undecided = false;
  const std::size_t done = scan(in, resume, in.size(), true, out, undecided);
  if (undecided) held_.assign(in.substr(done));
}

void secret_masker::finish(std::string& out) {
  if (held_.empty()) return;
  bool undecided = false;
  scan(held_, 0, held_.size(), false, out, undecided);  // shorter secrets inside it are still masked
  held_.clear();
}

#if defined(__SSE2__)
namespace {

/// The candidate loop of the vector scan over starts [c, limit): bits_at(c) tests the 16 starts
/// from c; candidate(at) is called for each start that passes, in order, and answers where the
/// scan goes on after a match there, or 0. Returns the first start not scanned.
template <class BitsAt, class Candidate>
std::size_t scan_blocks(std::size_t c, std::size_t limit, const BitsAt& bits_at, const Candidate& candidate) {
  while (c < limit) {
    auto bits = bits_at(c);
    if (bits == 0) {
      c += 16;
      continue;
    }
    if (limit - c < 16) bits &= (1u << (limit - c)) - 1;
    std::size_t next = c + 16;
    while (bits != 0) {
      const std::size_t resume = candidate(c + static_cast<std::size_t>(__builtin_ctz(bits)));
      if (resume == 0) {
        bits &= bits - 1;
        continue;
      }
      next = std::max(next, resume);
      bits = resume - c >= 16 ? 0 : bits & ~((1u << (resume - c)) - 1);
    }
    c = next;
  }
  return std::min(c, limit);
}

}  // namespace

// With K filters (K > 0: a template, so that they stay in registers; K == 0: any number, from
// memory).
template <std::size_t K, class Candidate>
std::size_t secret_masker::vector_scan(const char* p, std::size_t c, std::size_t limit, const filter* filters,
                                       std::size_t count, const Candidate& candidate) {
  if constexpr (K > 0) {
    __m128i first[K];
    __m128i last[K];
    std::size_t last_at[K];
    for (std::size_t i = 0; i < K; ++i) {
      first[i] = _mm_set1_epi8(static_cast<char>(filters[i].first));
      last[i] = _mm_set1_epi8(static_cast<char>(filters[i].last));
      last_at[i] = filters[i].last_at;
    }
    const auto bits_at = [&](std::size_t at) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + at));
      __m128i hit = _mm_setzero_si128();
      for (std::size_t i = 0; i < K; ++i) {
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + at + last_at[i]));
        hit = _mm_or_si128(hit, _mm_and_si128(_mm_cmpeq_epi8(a, first[i]), _mm_cmpeq_epi8(b, last[i])));
      }
      return static_cast<unsigned>(_mm_movemask_epi8(hit));
    };
    return scan_blocks(c, limit, bits_at, candidate);
  } else {
    struct pair_of_lanes {
      __m128i first;
      __m128i last;
    };
    std::vector<pair_of_lanes> lanes(count);
    for (std::size_t i = 0; i < count; ++i) {
      lanes[i] = {_mm_set1_epi8(static_cast<char>(filters[i].first)), _mm_set1_epi8(static_cast<char>(filters[i].last))};
    }
    const auto bits_at = [&](std::size_t at) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + at));
      __m128i hit = _mm_setzero_si128();
      for (std::size_t i = 0; i < count; ++i) {
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + at + filters[i].last_at));
        hit = _mm_or_si128(hit, _mm_and_si128(_mm_cmpeq_epi8(a, lanes[i].first), _mm_cmpeq_epi8(b, lanes[i].last)));
      }
      return static_cast<unsigned>(_mm_movemask_epi8(hit));
    };
    return scan_blocks(c, limit, bits_at, candidate);
  }
}
#endif

std::size_t secret_masker::scan(std::string_view v, std::size_t from, std::size_t stop, bool more, std::string& out,
                                bool& undecided) const {
  std::size_t pos = from;  // v[pos..) is not yet in `out`
  std::size_t c = from;    // the next start to test
  const auto take = [&](std::size_t at, std::size_t length) {
    out.append(v.substr(pos, at - pos));
    out.append(mask);
    pos = at + length;
  };
#if defined(__SSE2__)
  if (simd_) {
    // 16 starts at a time, as long as every filter's last byte is inside v: there each pattern
    // fits whole, so a start is decided at once.
    const std::size_t reach = 16 + longest_ - 1;  // bytes a block of starts reads
    const std::size_t limit = std::min(stop, v.size() >= reach ? v.size() - reach + 1 : 0);
    // A candidate: masks what matches there; returns where the scan goes on, 0 for no match.
    const auto candidate = [&](std::size_t at) -> std::size_t {
      const std::size_t m = match_at(v, at, more, undecided);  // never undecided here
      if (m == 0) return 0;
      take(at, m);
      return pos;
    };
    const filter* f = filters_.data();
    const std::size_t k = filters_.size();
    switch (k) {
      case 1: c = vector_scan<1>(v.data(), c, limit, f, k, candidate); break;
      case 2: c = vector_scan<2>(v.data(), c, limit, f, k, candidate); break;
      case 3: c = vector_scan<3>(v.data(), c, limit, f, k, candidate); break;
      case 4: c = vector_scan<4>(v.data(), c, limit, f, k, candidate); break;
      case 5: c = vector_scan<5>(v.data(), c, limit, f, k, candidate); break;
      case 6: c = vector_scan<6>(v.data(), c, limit, f, k, candidate); break;
      case 7: c = vector_scan<7>(v.data(), c, limit, f, k, candidate); break;
      case 8: c = vector_scan<8>(v.data(), c, limit, f, k, candidate); break;
      default: c = vector_scan<0>(v.data(), c, limit, f, k, candidate); break;
    }
    c = std::max(c, pos);  // a match may end past limit
  }
#endif
  for (; c < stop; ++c) {
    if (!first_[static_cast<unsigned char>(v[c])]) continue;
    const std::size_t m = match_at(v, c, more, undecided);
    if (undecided) {
      out.append(v.substr(pos, c - pos));
      return c;
    }
    if (m != 0) {
      take(c, m);
      c = pos - 1;
    }
  }
  if (pos < stop) {
    out.append(v.substr(pos, stop - pos));
    pos = stop;
  }
  return pos;
}

std::size_t secret_masker::match_at(std::string_view v, std::size_t c, bool more, bool& undecided) const {
  const std::size_t avail = v.size() - c;
  const char* at = v.data() + c;
  for (const std::uint16_t i : by_first_[static_cast<unsigned char>(*at)]) {  // longest first
    const std::string& p = patterns_[i];
    if (p.size() > avail) {
      if (more && std::memcmp(at, p.data(), avail) == 0) {
        undecided = true;  // v ends inside it: the next input decides
        return 0;
      }
      continue;
    }
    if (std::memcmp(at, p.data(), p.size()) == 0) return p.size();
  }
  return 0;
}

}  // namespace cmdcast::server
