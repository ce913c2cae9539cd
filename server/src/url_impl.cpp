// Boost.URL's implementation, compiled once (Debian ships no libboost_url).
#include <boost/url/src.hpp>
