#!/usr/bin/perl

# t/bench/cg-summary.pl: instructions per request from callgrind runs of
# nginx, by library and by function, with startup and shutdown taken out.
#
#   cg-summary.pl [--top N] [--module NAME.so] \
#       LABEL SHORT.out SHORT_REQUESTS LONG.out LONG_REQUESTS ...
#
# Each LABEL names two whole runs of the same config, one serving fewer
# requests than the other; what the longer run spent beyond the shorter,
# divided by the requests it served beyond it, is the cost of a request
# in steady state.  Self cost (Ir) only: a function's callees are counted
# where they are.  The first label is the baseline (plain proxy_pass);
# every other one is shown next to it, with the difference.

use strict;
use warnings;

use Getopt::Long;

my $top = 25;
my $module = 'ngx_http_webhook_lock_module.so';

GetOptions('top=i' => \$top, 'module=s' => \$module) or die "bad options\n";

@ARGV >= 5 && @ARGV % 5 == 0 or die "usage: $0 LABEL A.out N B.out M ...\n";

my (@labels, %per, %incl);

while (@ARGV) {
    my ($label, $fa, $na, $fb, $nb) = splice(@ARGV, 0, 5);
    my ($short, $short_incl) = self_cost($fa);
    my ($long, $long_incl) = self_cost($fb);
    my $n = $nb - $na;

    $n > 0 or die "$label: the second run must serve more requests\n";

    my (%d, %i);
    for my $k (keys %$long) {
        $d{$k} = (($long->{$k} // 0) - ($short->{$k} // 0)) / $n;
        $i{$k} = (($long_incl->{$k} // 0) - ($short_incl->{$k} // 0)) / $n;
    }

    push @labels, $label;
    $per{$label} = \%d;
    $incl{$label} = \%i;
    $per{$label}{''} = $n;      # requests measured
}

my @groups = ('module', 'nginx', 'hiredis', 'cJSON', 'libc', 'libcrypto',
              'other');

my %group_of;

sub group {
    my ($ob) = @_;

    return $group_of{$ob} //= do {
        $ob =~ /\Q$module\E$/ ? 'module'
        : $ob =~ m{/nginx$} ? 'nginx'
        : $ob =~ /libhiredis/ ? 'hiredis'
        : $ob =~ /libcjson/ ? 'cJSON'
        : $ob =~ m{/libc\.so|/libc-} ? 'libc'
        : $ob =~ /libcrypto/ ? 'libcrypto'
        : 'other';
    };
}

# totals by group

my %by;

for my $l (@labels) {
    for my $k (keys %{ $per{$l} }) {
        next if $k eq '';
        my ($ob) = split /\t/, $k;
        $by{$l}{ group($ob) } += $per{$l}{$k};
        $by{$l}{total} += $per{$l}{$k};
    }
}

my $base = $labels[0];

print "Instructions (Ir) per request, steady state, self cost by library\n";
print "(requests measured: ",
      join(', ', map { "$_ $per{$_}{''}" } @labels), ")\n\n";

printf "| %-10s |%s\n", 'library', join('', map {
    sprintf(" %12s |", $_) } @labels, map { "$_ - $base" } @labels[1 .. $#labels]);
print '|', '-' x 12, '|', '-------------:|' x (2 * @labels - 1), "\n";

for my $g (@groups, 'total') {
    my @v = map { $by{$_}{$g} // 0 } @labels;
    next if $g ne 'total' && !grep { abs($_) >= 1 } @v;
    printf "| %-10s |%s%s\n", $g,
        join('', map { sprintf(" %12.0f |", $_) } @v),
        join('', map { sprintf(" %+12.0f |", $_ - $v[0]) } @v[1 .. $#v]);
}

# functions: the module's own, then every function that costs more (or
# less) per request with the gate than without it

for my $l (@labels[1 .. $#labels]) {
    my $d = $per{$l};
    my $p = $per{$base};

    print "\n$l: the module's own functions, Ir per request: self, share of",
          " the module's\nself total, and inclusive (with everything they",
          " call; recursion counts twice)\n\n";

    my @own = sort { $incl{$l}{$b} <=> $incl{$l}{$a} }
              grep { $_ ne '' && group((split /\t/)[0]) eq 'module'
                     && abs($incl{$l}{$_}) >= 1 } keys %$d;

    my $sum = 0;
    $sum += $d->{$_} for @own;

    for my $k (@own[0 .. ($top < @own ? $top - 1 : $#own)]) {
        my (undef, $fn) = split /\t/, $k;
        printf "  %10.0f  %5.1f%%  %10.0f  %s\n", $d->{$k},
               $sum ? 100 * $d->{$k} / $sum : 0, $incl{$l}{$k} // 0, $fn;
    }

    printf "  %10.0f  total\n", $sum;

    print "\n$l - $base: where the extra instructions go, by function\n\n";

    my %diff;
    my %keys = map { $_ => 1 } grep { $_ ne '' } keys %$d, keys %$p;

    for my $k (keys %keys) {
        $diff{$k} = ($d->{$k} // 0) - ($p->{$k} // 0);
    }

    my @hot = sort { abs($diff{$b}) <=> abs($diff{$a}) } keys %diff;

    for my $k (@hot[0 .. ($top < @hot ? $top - 1 : $#hot)]) {
        my ($ob, $fn) = split /\t/, $k;
        printf "  %+10.0f  %-9s  %s\n", $diff{$k}, group($ob), $fn;
    }
}


# self cost of every (object, function) in one callgrind output file

sub self_cost {
    my ($file) = @_;
    my (%names, %cost, %incl);
    my ($ob, $fn) = ('?', '?');
    my $call = 0;

    open my $fh, '<', $file or die "$file: $!\n";

    while (<$fh>) {
        if (/^(c?ob|c?fn|f[lie]|cf[il])=(?:\((\d+)\))?\s*(.*?)\s*$/) {
            my ($what, $id, $name) = ($1, $2, $3);
            my $space = $what =~ /ob/ ? 'ob' : $what =~ /fn/ ? 'fn' : 'fl';

            if (defined $id) {
                if ($name ne '') {
                    $names{$space}{$id} = $name;
                } else {
                    $name = $names{$space}{$id} // "($id)";
                }
            }

            $ob = $name if $what eq 'ob';
            $fn = $name if $what eq 'fn';
            next;
        }

        if (/^calls=/) {
            $call = 1;
            next;
        }

        if (/^(?:[+-]?\d+|\*)(?:\s+(\d+))?/) {
            if ($call) {
                $call = 0;      # the inclusive cost of that call
                $incl{"$ob\t$fn"} += $1 // 0;
                next;
            }

            $cost{"$ob\t$fn"} += $1 // 0;
            $incl{"$ob\t$fn"} += $1 // 0;
        }
    }

    return (\%cost, \%incl);
}
