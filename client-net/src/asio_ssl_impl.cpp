// Boost.Asio's SSL implementation, compiled once (BOOST_ASIO_SEPARATE_COMPILATION), for the
// clients that link this library.
#include <boost/asio/ssl/impl/src.hpp>
