#!/usr/bin/perl

# Chaos: albums of six images from twenty WhatsApp contacts, all posted at
# once, through the gate to a race-prone Chatwoot stand-in; the provider
# redelivers on anything but 2xx.  Redis is restarted and nginx reloaded in
# the middle.  Fail closed: one conversation per contact, every message
# processed (exactly once when webhook_dedup exists), never two requests of
# one sender in the app at once.  Fail open, Redis down: what gets through
# unlocked is counted and reported, not asserted.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw/time sleep/;
use NgxHarness;
use Chatwoot;
use Provider;

my $h = NgxHarness->new(needs => [qw/proxy redis/]);

# Locks outlive the restart, as they should in a lock store: appendonly.
# (Without it a restart drops the locks of requests still in the app.)

my $redis = $h->redis(args => [qw/--appendonly yes --appendfsync always/]);

plan skip_all => 'needs a Redis of its own to restart'
    unless $redis->can_restart;

my $app = Chatwoot->start(port => $h->port('app'), dir => $h->testdir,
                          window => 0.15);

sub conf {
    my ($fail, $extra) = @_;

    $extra //= '';

    return <<"CONF";
webhook_redis 127.0.0.1:%%PORT_REDIS%% connect_timeout=300ms timeout=500ms;

log_format chaos '\$msec \$pid \$status \$webhook_lock_status \$webhook_sender';

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    access_log %%TESTDIR%%/chaos.log chaos;

    location /webhooks/whatsapp/ {
        webhook_lock        whatsapp;
        webhook_lock_ttl    10s;
        webhook_retry_after 1;
        webhook_redis_fail  $fail;
        $extra

        proxy_pass http://127.0.0.1:%%PORT_APP%%;
    }
}
CONF
}

# exactly once needs dedup, which may not be there yet

my ($rc) = $h->config_test(conf('closed', 'webhook_dedup 1h;'));
my $dedup = $rc == 0;

note($dedup ? 'webhook_dedup: exactly once asserted'
            : 'no webhook_dedup: at least once asserted');

$h->start(conf('closed', $dedup ? 'webhook_dedup 1h;' : ''),
          main => 'worker_processes 2;');

# what the app did for the senders of one run

sub app_view {
    my ($prefix) = @_;

    my @msgs = grep { $_->{sender} =~ /^$prefix/ } @{ $app->messages };
    my $convs = $app->conversations;

    my %ids;
    $ids{ $_->{id} }++ for @msgs;

    my ($overlap, $by) = NgxHarness::max_concurrency(
        [ map { { arrived => $_->{start}, finished => $_->{end},
                  sender => $_->{sender} } } @msgs ],
        sub { $_[0]{sender} });

    my %conv = map { $_ => $convs->{$_} } grep { /^$prefix/ } keys %$convs;

    return { msgs => \@msgs, ids => \%ids, conv => \%conv,
             overlap => $overlap, by => $by };
}

###############################################################################

# fail closed: Redis restarted, then nginx reloaded, while albums arrive

# what nginx answered since $mark (the chaos log's offset): the lines
# "STATUS LOCK_STATUS" as a count
sub answered {
    my ($mark, $what) = @_;

    my $log = substr($h->read_file('chaos.log'), $mark);
    my $n = () = $log =~ / \Q$what\E /g;

    return $n;
}

my $mark = length $h->read_file('chaos.log');

my $t0 = time;
my $burst = Provider->album($h, '1555100', 20);

# Redis goes once the albums are held back, comes back once nginx has
# answered lock_unavailable, and nginx reloads once locking works again

ok($h->wait_for(sub { answered($mark, '503 busy') }),
   'the albums are held back');
ok($redis->stop, 'Redis stopped mid-burst');

$mark = length $h->read_file('chaos.log');
$h->wait_for(sub { answered($mark, '503 error') });
$redis->start;
note(sprintf 'Redis back after %.1f s', time - $t0);

$mark = length $h->read_file('chaos.log');
ok($h->wait_for(sub { answered($mark, '200 acquired') }),
   'locking again once Redis is back');

my @old = $h->worker_pids;
ok($h->reload(undef, timeout => 15), 'nginx reloaded mid-burst');
isnt(join(',', sort $h->worker_pids), join(',', sort @old), 'new workers');

my $results = $burst->wait;
my %st = Provider::statuses($results);

note(sprintf 'fail closed: %d webhooks, %d attempts in %.1f s: %s',
     scalar @$results, scalar(map { @{ $_->{attempts} } } @$results),
     time - $t0, join(', ', map { "$_ x$st{$_}" } sort keys %st));

is(scalar(grep { !$_->{ok} } @$results), 0,
   'every webhook delivered in the end (2xx)');
ok($st{'503 sender_busy'}, 'albums were held back: 503 sender_busy');
ok($st{'503 lock_unavailable'}, 'Redis outage seen: 503 lock_unavailable');

my $v = app_view('1555100');

is(scalar(keys %{ $v->{conv} }), 20, 'a conversation for every contact');
is_deeply([ grep { $v->{conv}{$_} != 1 } sort keys %{ $v->{conv} } ], [],
          'exactly one conversation per contact')
    or diag explain $v->{conv};
is(scalar(keys %{ $v->{ids} }), 120, 'every message processed');
is($v->{overlap}, 1, 'never two requests of one sender in the app at once')
    or diag explain { map { $_ => $v->{by}{$_} }
                      grep { $v->{by}{$_} > 1 } keys %{ $v->{by} } };

my $twice = grep { $v->{ids}{$_} > 1 } keys %{ $v->{ids} };

if ($dedup) {
    is($twice, 0, 'every message processed exactly once');

} else {
    note("$twice messages processed more than once (no dedup)");
}

# every lock given back, the restart and the reload notwithstanding (the
# dedup marks stay, as they should)

my @locks;

$h->wait_for(sub {
    @locks = grep { !/^webhook:dedup:/ } @{ $redis->cmd('KEYS', '*') };
    !@locks;
}, timeout => 10);

is_deeply(\@locks, [], 'no lock left in Redis');

###############################################################################

# fail open: albums arrive while Redis is down; reported, not asserted

ok($h->reload(conf('open'), timeout => 15), 'reloaded, fail open');

ok($redis->stop, 'Redis stopped');

$mark = length $h->read_file('chaos.log');

$t0 = time;
$burst = Provider->album($h, '1555200', 10);

# Redis comes back once requests went through unlocked

$h->wait_for(sub { answered($mark, '200 open') });
$redis->start;

$results = $burst->wait;
%st = Provider::statuses($results);

is(scalar(grep { !$_->{ok} } @$results), 0,
   'fail open: every webhook delivered');

$v = app_view('1555200');

my $extra = 0;
$extra += $_ - 1 for values %{ $v->{conv} };

my $open = () = $h->read_file('chaos.log') =~ / 200 open /g;

ok($open, 'fail open: requests forwarded unlocked while Redis was down');

diag(sprintf 'fail open, Redis down a while: %d webhooks in %.1f s; %d forwarded'
     . ' unlocked; %d extra conversations for %d contacts; at most %d'
     . ' requests of one sender in the app at once',
     scalar @$results, time - $t0, $open, $extra,
     scalar(keys %{ $v->{conv} }), $v->{overlap});

$app->stop;
$h->done;
