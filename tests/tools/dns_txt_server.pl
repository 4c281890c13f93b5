#!/usr/bin/perl
# A DNS server for one TXT record, on 127.0.0.1, for SpamAssassin's own DKIM check in the tests.
#
#   perl dns_txt_server.pl PORT NAME RECORD
#
# Answers a TXT query for NAME (selector._domainkey.domain) with RECORD (the value `newsletter
# dkim keygen` printed) and every other query with NXDOMAIN, so nothing is looked up on the
# network. Prints "ready" once it listens (UDP and TCP); runs until killed.
use strict;
use warnings;
use Net::DNS;
use Net::DNS::Nameserver;

my ($port, $name, $record) = @ARGV;
die "usage: $0 PORT NAME RECORD\n" unless defined $record;
$name =~ s/\.$//;

my $server = Net::DNS::Nameserver->new(
    LocalAddr    => ['127.0.0.1'],
    LocalPort    => $port,
    ReplyHandler => sub {
        my ($qname, $qclass, $qtype) = @_;
        $qname =~ s/\.$//;
        if (lc $qname eq lc $name && $qtype eq 'TXT') {
            my $rr = Net::DNS::RR->new(name => $qname, type => 'TXT', ttl => 300);
            $rr->txtdata(unpack('(A255)*', $record));    # strings of at most 255 octets, as DNS holds them
            return ('NOERROR', [$rr], [], [], { aa => 1 });
        }
        return ('NXDOMAIN', [], [], [], { aa => 1 });
    },
) or die "cannot listen on 127.0.0.1:$port\n";
$| = 1;
print "ready\n";
$server->main_loop;
