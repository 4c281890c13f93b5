#!/usr/bin/perl
# A second, independent DKIM verifier for the tests: Perl's Mail::DKIM (the one SpamAssassin
# and Amavis use), which shares no code with dkimpy or with our signer.
#
#   perl mail_dkim_verify.pl NAME RECORD FILE...
#
# Its DNS lookup is answered with RECORD (the TXT value `newsletter dkim keygen` printed) at
# NAME (selector._domainkey.domain), and with nothing anywhere else. Prints one line per FILE:
# "FILE RESULT DETAIL", RESULT being Mail::DKIM's (pass, fail, invalid, temperror, none).
# A file may hold the message with CRLF or LF line ends (as Postfix's smtp-sink -d dumps it).
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Net::DNS;

my ($name, $record, @files) = @ARGV;
die "usage: $0 NAME RECORD FILE...\n" unless defined $record && @files;
$name =~ s/\.$//;

{
    no warnings 'redefine';
    *Mail::DKIM::DNS::query = sub {
        my ($domain, $type) = @_;
        $domain =~ s/\.$//;
        if (lc $type eq 'txt' && lc $domain eq lc $name) {
            my $rr = Net::DNS::RR->new(name => $domain, type => 'TXT', ttl => 300);
            $rr->txtdata(unpack('(A255)*', $record));    # strings of at most 255 octets, as DNS holds them
            $@ = 'NOERROR';
            return ($rr);
        }
        $@ = 'NXDOMAIN';
        return;
    };
}

for my $file (@files) {
    open(my $fh, '<:raw', $file) or die "$file: $!\n";
    my $dkim = Mail::DKIM::Verifier->new();
    while (my $line = <$fh>) {
        $line =~ s/\r?\n\z/\r\n/;    # CRLF as on the wire (a file may hold the message with LF line ends)
        $dkim->PRINT($line);
    }
    close $fh;
    $dkim->CLOSE();
    my $detail = $dkim->result_detail;
    $detail =~ s/\s+/ /g;
    print "$file ", $dkim->result, " $detail\n";
}
