// Boost.JSON's implementation, compiled once for everything that links cmdcast_common.
#include <boost/json/src.hpp>
