// Where a request comes from (http/client_address): only a trusted proxy may name the client.
#include <gtest/gtest.h>

#include "http/client_address.hpp"

namespace cmdcast::server {
namespace {

namespace ip = boost::asio::ip;

client_address locate(const std::string& peer, std::string_view forwarded, std::string_view xff,
                      const std::vector<std::string>& trusted,
                      forwarding_header use = forwarding_header::x_forwarded_for) {
  return locate_client(ip::make_address(peer), forwarded, xff, proxy_list(trusted), use);
}

TEST(ClientAddress, WithoutATrustedPeerTheHeadersAreIgnored) {
  const auto a = locate("192.0.2.10", "for=6.6.6.6", "6.6.6.7", {"10.0.0.0/8"});
  EXPECT_EQ(a.client, "192.0.2.10");
  EXPECT_EQ(a.proxy, "");
  EXPECT_TRUE(a.forwarded);  // still a proxied request, as far as anonymous access goes
  EXPECT_FALSE(a.loopback);
  const auto direct = locate("127.0.0.1", "", "", {});
  EXPECT_EQ(direct.client, "127.0.0.1");
  EXPECT_FALSE(direct.forwarded);
  EXPECT_TRUE(direct.loopback);
}

TEST(ClientAddress, HopsAreWalkedFromTheNearestToTheFirstUntrusted) {
  const std::vector<std::string> trusted{"10.0.0.0/8", "127.0.0.1"};
  auto a = locate("127.0.0.1", "", "6.6.6.6, 203.0.113.9, 10.1.2.3", trusted);
  EXPECT_EQ(a.client, "203.0.113.9");
  EXPECT_EQ(a.proxy, "127.0.0.1");
  // Every hop trusted: the farthest is the client.
  a = locate("127.0.0.1", "", "10.0.0.1,10.0.0.2", trusted);
  EXPECT_EQ(a.client, "10.0.0.1");
  // A hop that is no address stops the walk at the nearest known one.
  a = locate("127.0.0.1", "", "6.6.6.6, unknown, 10.9.9.9", trusted);
  EXPECT_EQ(a.client, "10.9.9.9");
  a = locate("127.0.0.1", "", "garbage", trusted);
  EXPECT_EQ(a.client, "127.0.0.1");
  // Ports are not part of the address.
  a = locate("127.0.0.1", "", "203.0.113.9:5555", trusted);
  EXPECT_EQ(a.client, "203.0.113.9");
  EXPECT_FALSE(a.loopback);
}

TEST(ClientAddress, OnlyTheHeaderTheProxiesWriteIsRead) {
  const std::vector<std::string> trusted{"127.0.0.1"};
  // nginx appends to X-Forwarded-For and passes a client's own Forwarded on: a forged one is
  // not read.
  auto a = locate("127.0.0.1", "for=6.6.6.6", "203.0.113.9", trusted);
  EXPECT_EQ(a.client, "203.0.113.9");
  a = locate("127.0.0.1", "for=6.6.6.6", "", trusted);
  EXPECT_EQ(a.client, "127.0.0.1");
  // A proxy that writes Forwarded (forwarded_header = "Forwarded"): X-Forwarded-For is the forgery.
  const auto forwarded = forwarding_header::forwarded;
  a = locate("127.0.0.1", "for=192.0.2.60;proto=http;by=203.0.113.43", "6.6.6.6", trusted, forwarded);
  EXPECT_EQ(a.client, "192.0.2.60");
  a = locate("127.0.0.1", R"(For="[2001:db8:cafe::17]:4711", for=127.0.0.1)", "", trusted, forwarded);
  EXPECT_EQ(a.client, "2001:db8:cafe::17");
  a = locate("127.0.0.1", R"(for="_hidden")", "", trusted, forwarded);
  EXPECT_EQ(a.client, "127.0.0.1");
  // A comma inside quotes does not split the element.
  a = locate("127.0.0.1", R"(for=192.0.2.1;by="a,b")", "", trusted, forwarded);
  EXPECT_EQ(a.client, "192.0.2.1");
  a = locate("127.0.0.1", "", "6.6.6.6", trusted, forwarded);
  EXPECT_EQ(a.client, "127.0.0.1");
}

TEST(ClientAddress, BlocksMatchIPv4IPv6AndMappedAddresses) {
  proxy_list list({"10.0.0.0/8", "fd00::/8", "192.0.2.7"});
  EXPECT_TRUE(list.contains(ip::make_address("10.255.0.1")));
  EXPECT_FALSE(list.contains(ip::make_address("11.0.0.1")));
  EXPECT_TRUE(list.contains(ip::make_address("fd12::1")));
  EXPECT_FALSE(list.contains(ip::make_address("fe80::1")));
  EXPECT_TRUE(list.contains(ip::make_address("192.0.2.7")));
  EXPECT_FALSE(list.contains(ip::make_address("192.0.2.8")));
  // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d.
  EXPECT_TRUE(list.contains(ip::make_address("::ffff:10.1.1.1")));
  EXPECT_EQ(locate("::ffff:192.0.2.7", "", "203.0.113.1", {"192.0.2.7"}).client, "203.0.113.1");
}

TEST(ClientAddress, OnlyAddressesAndBlocksAreTrustedProxies) {
  EXPECT_TRUE(parse_address_block("10.0.0.0/8"));
  EXPECT_TRUE(parse_address_block("10.1.2.3/8"));  // the host bits are ignored
  EXPECT_TRUE(parse_address_block("::1"));
  EXPECT_TRUE(parse_address_block("fd00::/8"));
  for (const char* bad : {"", "10.0.0.0/33", "proxy.example", "10.0.0.0/", "/8", "fd00::/129", "1.2.3.4.5"}) {
    EXPECT_FALSE(parse_address_block(bad)) << bad;
  }
}

}  // namespace
}  // namespace cmdcast::server
