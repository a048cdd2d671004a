#!/usr/bin/perl

# ./build.sh demo: an album of six images from one WhatsApp contact, sent
# at once, first straight to a race-prone stand-in for Chatwoot, then
# through nginx with webhook_lock, the provider redelivering on 503 after
# Retry-After, then through a location that waits at the edge instead.
# Prints what happened; exits non-zero if the gate let the race through or
# lost a message.  --keep leaves everything running until Ctrl-C.
#
# It runs what the tests run: the nginx of TEST_NGINX_BINARY (Debian's
# by default), a redis-server, the stand-in (t/lib/Chatwoot.pm) and the
# provider (t/lib/Provider.pm), all in a directory of their own.  The
# stand-in holds the first image it gets until the other five are where
# the phase shows them (all six inside its race window; answered 503;
# waiting at the edge), so that what is shown does not depend on how fast
# the machine is.

use strict;
use warnings;

use File::Basename qw/dirname/;
use Time::HiRes qw/time sleep/;

use lib dirname(__FILE__) . '/../lib';
use NgxHarness;
use Chatwoot;
use Provider;

my $module = shift or die "usage: album.pl MODULE.so [--keep]\n";
my $keep = grep { $_ eq '--keep' } @ARGV;
my $images = 6;

$| = 1;

my $h = NgxHarness->new(module => $module, needs => [qw/proxy redis/]);
my $redis = $h->redis;
my $dir = $h->testdir;
my $app = Chatwoot->start(port => $h->port('app'), dir => $dir);

$h->start(<<'CONF');
log_format webhook '$time_iso8601 $status $webhook_lock_status '
                   'sender=$webhook_sender inbox=$webhook_inbox '
                   'id=$webhook_message_id redis=$webhook_redis_time';

webhook_redis 127.0.0.1:%%PORT_REDIS%%;

upstream chatwoot {
    server 127.0.0.1:%%PORT_APP%%;
}

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    access_log %%TESTDIR%%/webhooks.log webhook;

    location ~ ^/webhooks/whatsapp/(?<phone>[^/]+)$ {
        webhook_lock        whatsapp;
        webhook_lock_ttl    30s;
        webhook_retry_after 1;
        proxy_pass http://chatwoot;
    }

    location ~ ^/waiting/whatsapp/(?<phone>[^/]+)$ {
        webhook_lock        whatsapp;
        webhook_lock_ttl    30s;
        webhook_lock_wait   10s;
        add_header X-Webhook-Lock $webhook_lock_status always;
        add_header X-Webhook-Lock-Wait $webhook_lock_wait_time always;
        proxy_pass http://chatwoot;
    }
}
CONF

print "webhook_lock demo: a WhatsApp contact sends an album of $images "
    . "images\n\n";

# 1. straight to the app: the race (the stand-in lets them go once all
# six have looked for the contact's conversation)

album($h->port('app'), '15550001111', 'direct', '/webhooks/whatsapp/1',
      sub { $app->held('direct') >= $images });

my $direct = $app->conversations->{'15550001111'} // 0;
printf "  straight to the app:  %d webhooks at once -> %d conversations "
    . "for one contact\n\n", $images, $direct;

# 2. through the gate, the provider redelivering on 503 (the first in
# the app until nginx has answered the five others 503)

my $mark = -s "$dir/webhooks.log" || 0;
my $start = time;

my @attempts = album($h->port('nginx'), '15550002222', 'gate',
                     '/webhooks/whatsapp/12345678911', sub {
    my @busy = substr($h->read_file('webhooks.log'), $mark) =~ / 503 busy /g;
    @busy >= $images - 1;
});

print "  through nginx + webhook_lock (the provider redelivers on 503):\n";
for my $a (sort { $a->{t} <=> $b->{t} } @attempts) {
    printf "    %5.2fs  image %d  %s\n", $a->{t} - $start, $a->{n},
        $a->{status} == 200 ? "200, forwarded to the app"
        : "$a->{status} $a->{error}, Retry-After: "
          . ($a->{retry_after} // '-');
}

my $conversations = $app->conversations->{'15550002222'} // 0;
my @messages = grep { $_->{sender} eq '15550002222' } @{ $app->messages };
my %ids = map { $_->{id} => 1 } @messages;
my $overlap = overlap(@messages);
my $busy = grep { $_->{status} == 503 } @attempts;

printf "\n  result: %d conversation, %d of %d messages delivered once "
    . "each,\n          %d answered 503 and redelivered, at most %d "
    . "request of\n          this contact in the app at once\n",
    $conversations, scalar(keys %ids), $images, $busy, $overlap;

# 3. through a location that waits at the edge: no redelivery at all
# (the first in the app until the five others wait)

$start = time;

my @waits = album($h->port('nginx'), '15550003333', 'wait',
                  '/waiting/whatsapp/12345678911', sub {
    $h->status->{webhook_lock_requests_waiting} >= $images - 1;
});

print "\n  through a location with webhook_lock_wait 10s (no redelivery):\n";
for my $a (sort { $a->{done} <=> $b->{done} } @waits) {
    my $hd = $a->{headers};

    printf "    %5.2fs  image %d  %s\n", $a->{done} - $start, $a->{n},
        $a->{status} == 200
        ? "200, forwarded to the app after "
          . ($hd->{'x-webhook-lock-wait'} // '-') . " s at the edge ("
          . ($hd->{'x-webhook-lock'} // '-') . ")"
        : "$a->{status} $a->{error}";
}

my $waited_conversations = $app->conversations->{'15550003333'} // 0;
my @waited = grep { $_->{sender} eq '15550003333' } @{ $app->messages };
my %waited_ids = map { $_->{id} => 1 } @waited;
my $waited_overlap = overlap(@waited);
my $redelivered = grep { $_->{status} != 200 } @waits;

printf "\n  result: %d conversation, %d of %d messages delivered once "
    . "each,\n          %d redelivered, at most %d request of this contact "
    . "in the\n          app at once\n",
    $waited_conversations, scalar(keys %waited_ids), $images, $redelivered,
    $waited_overlap;

my $ok = $conversations == 1 && keys(%ids) == $images
         && @messages == $images && $overlap == 1
         && $waited_conversations == 1 && keys(%waited_ids) == $images
         && @waited == $images && $waited_overlap == 1 && !$redelivered;

print $ok ? "\n  the gate held: one conversation, no message lost\n"
          : "\n  FAILED: the race got through or a message was lost\n";

if ($keep) {
    my ($n, $r, $a) = map { $h->port($_) } qw/nginx redis app/;

    print <<"TEXT";

Everything is still running (files in $dir):
  nginx with the module   http://127.0.0.1:$n/webhooks/whatsapp/<phone>
  redis-server            127.0.0.1:$r
  Chatwoot stand-in       127.0.0.1:$a

Send your own webhook:
  curl -i -H 'Content-Type: application/json' \\
    http://127.0.0.1:$n/webhooks/whatsapp/12345678911 \\
    -d '{"object":"whatsapp_business_account","entry":[{"changes":[{"value":
{"metadata":{"phone_number_id":"123456789"},"messages":[{"from":"15557654321",
"id":"wamid.1","type":"text","text":{"body":"hi"}}]}}]}]}'

Watch it:  tail -f $dir/webhooks.log
Stop it:   Ctrl-C
TEXT

    sleep 1 while 1;
}

$app->stop;
exit($ok ? 0 : 1);


# Six webhooks of one contact posted at once by the provider, which
# redelivers on 503 after Retry-After.  Each phase's images are held in
# the stand-in (?hold=) until $ready says the others are in place: then
# they go.  Returns every attempt, with its image's number.
sub album {
    my ($port, $sender, $tag, $uri, $ready) = @_;

    my @hooks = map {
        { tag => $_,
          body => Provider::whatsapp_body(from => $sender,
                                          id => "wamid.$tag.$_") }
    } 1 .. $images;

    my $burst = Provider->send($h, \@hooks, uri => "$uri?hold=$tag",
                               ports => [ $port ], retry_cap => 1,
                               jitter => 0.2, deadline => 40);

    $h->wait_for($ready, interval => 0.05)
        or warn "$tag: the images were not in place in time\n";
    $app->release($tag);

    return map {
        my $r = $_;
        map { { %$_, n => $r->{tag} } } @{ $r->{attempts} };
    } @{ $burst->wait };
}

# the most requests of one contact inside the app at the same time
sub overlap {
    my @m = @_;

    return NgxHarness::max_concurrency(
        [ map { { arrived => $_->{start}, finished => $_->{end} } } @m ]);
}
