#!/usr/bin/perl

# docs/chatwoot.md's nginx.conf, run as the guide writes it.  The one
# ```nginx block of the guide is read from the guide itself; the inside of
# its http {} is started (the harness writes load_module, pid, error_log,
# daemon and events itself), with only these substitutions, each checked
# to have matched:
#
#   webhook_redis 127.0.0.1:6379     the test's Redis (which is given the
#                                    guide's password=)
#   server 127.0.0.1:3000            the recording upstream ("chatwoot")
#   listen 80                        127.0.0.1:%%PORT_NGINX%%
#   listen 127.0.0.1:9145            127.0.0.1:%%PORT_STATUS%%
#   /var/log/nginx/                  the test directory
#   /etc/nginx/bandwidth.htpasswd    a file in it, with a test user
#
# and, only when nginx -t refuses webhook_lock_wait (a build from before
# waiting at the edge), without its webhook_lock_wait and
# webhook_lock_queue lines, the 503 answers being checked instead of the
# waits.  Each route then gets a real webhook from Chatwoot's test suite,
# signed with the secrets the guide writes (Bandwidth's with basic auth,
# Telegram's with none, as Chatwoot registers it): forwarded
# byte-identical with X-Webhook-Lock: acquired, redelivered as a
# duplicate, refused 401 with a wrong signature or no credentials; no
# Telegram bot token in a log or a key; Meta's GET handshakes pass
# untouched; the status server answers.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::SHA qw(sha256_hex);
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw/time sleep/;
use NgxHarness;
use Provider;

my $guide_file = "$FindBin::Bin/../docs/chatwoot.md";

my $h = NgxHarness->new(needs => [qw/proxy map redis/]);

###############################################################################

# the guide's configuration

open my $fh, '<', $guide_file or die "$guide_file: $!";
my $guide = do { local $/; <$fh> };
close $fh;

my @blocks = $guide =~ /^```nginx[ \t]*\n(.*?)^```[ \t]*$/msg;

# the index of the brace closing the block opened at $open, quoted strings
# and comments skipped

sub closing {
    my ($text, $open) = @_;

    my $depth = 0;
    pos($text) = $open;

    while ($text =~ /\G(?:"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|\#[^\n]*
                       |([{}])|[^"'#{}]+)/gcx)
    {
        next unless defined $1;
        $depth += $1 eq '{' ? 1 : -1;
        return pos($text) - 1 if $depth == 0;
    }

    die "unbalanced braces after offset $open\n";
}

my $conf = $blocks[0] // '';

$conf =~ /^http\s*\{/mg or BAIL_OUT("no http {} in the guide's nginx block");
my $open = pos($conf) - 1;
my $close = closing($conf, $open);

my $http = substr($conf, $open + 1, $close - $open - 1);
my $outside = substr($conf, 0, $open) . substr($conf, $close + 1);

# outside http {}: only what the harness writes itself

(my $rest = $outside) =~ s/^\s*#.*$//mg;
$rest =~ s/^\s*events\s*\{[^}]*\}//m;
$rest =~ s/^\s*(?:load_module|worker_processes|error_log|pid)\b[^;]*;//mg;
$rest =~ s/^\s*http\s*$//m;

# the guide's Redis password goes to the test's Redis

my ($doc_password) = $http =~ /^\s*webhook_redis\s[^;]*\bpassword=(\S+)/m;

# each: a pattern, whose first group is kept, and what replaces the rest
# of its match

my %subst = (
    redis    => [ qr/(webhook_redis\s+)127\.0\.0\.1:6379\b/,
                  '127.0.0.1:%%PORT_REDIS%%' ],
    upstream => [ qr/(upstream\s+chatwoot\s*\{\s*server\s+)
                     127\.0\.0\.1:3000\b/x,
                  '127.0.0.1:%%PORT_UPSTREAM%%' ],
    listen   => [ qr/(listen\s+)80(?=\s*;)/, '127.0.0.1:%%PORT_NGINX%%' ],
    status   => [ qr/(listen\s+)127\.0\.0\.1:9145(?=\s*;)/,
                  '127.0.0.1:%%PORT_STATUS%%' ],
    logs     => [ qr{()/var/log/nginx/}, '%%TESTDIR%%/' ],
    htpasswd => [ qr{()/etc/nginx/bandwidth\.htpasswd},
                  '%%TESTDIR%%/bandwidth.htpasswd' ],
);

my %matched;

for my $name (sort keys %subst) {
    my ($re, $to) = @{ $subst{$name} };
    $matched{$name} = $http =~ s/$re/$1$to/g;
}

my $redis = $h->redis(password => $ENV{TEST_NGINX_REDIS_PORT}
                                  ? $ENV{TEST_NGINX_REDIS_PASSWORD}
                                  : $doc_password);

if ($ENV{TEST_NGINX_REDIS_PORT}) {
    my $pw = $ENV{TEST_NGINX_REDIS_PASSWORD};
    $http =~ s/\s+password=\S+/defined $pw ? " password=$pw" : ''/e;
}

# Meta's verification handshake: the app answers with hub.challenge

my $up = $h->upstream(handler => sub {
    my ($req) = @_;
    return unless $req->{method} eq 'GET'
                  && $req->{uri} =~ /[?&]hub\.challenge=(\d+)/;
    return (200, { 'Content-Type' => 'text/plain' }, $1);
});

my ($wait_rc) = $h->config_test(<<'CONF');
webhook_redis 127.0.0.1:6379;
server {
    location / {
        webhook_lock json;
        webhook_sender from;
        webhook_lock_wait 1s;
        proxy_pass http://127.0.0.1:1;
    }
}
CONF

my $waits = $wait_rc == 0;

if (!$waits) {
    $http =~ s/^\s*webhook_lock_(?:wait|queue)\b[^;]*;[ \t]*\n//mg;
}

is(scalar @blocks, 1, 'the guide has one nginx block');
is($rest =~ s/\s+//gr, '', 'outside http {}: load_module, worker_processes,'
                           . ' error_log, pid, events only')
    or diag "left: $rest";
ok($matched{$_}, "substituted: $_") for sort keys %subst;
ok(defined $doc_password, 'the guide gives Redis a password');

note($waits ? 'webhook_lock_wait: supported'
            : 'webhook_lock_wait: not in this build, 503 checked instead');

$h->config_ok($http, "the guide's nginx.conf passes nginx -t");

###############################################################################

# the locations and secrets the guide writes

my %secret = $http =~ /^\s*map\s+\S+\s+\$(\w+)\s*
                         \{\s*default\s+"([^"]*)"\s*;\s*\}/mgx;

my @locations;

while ($http =~ /^\s*location\s+([^{]*?)\s*\{/mg) {
    my $start = pos($http) - 1;
    my $end = closing($http, $start);
    push @locations, { spec => $1,
                       body => substr($http, $start + 1, $end - $start - 1) };
    pos($http) = $start + 1;
}

sub directive {
    my ($loc, $name) = @_;
    my ($v) = $loc->{body} =~ /^\s*\Q$name\E\s+([^;]*);/m;
    return $v;
}

sub location_of {
    my ($format, $signed) = @_;

    my @l = grep {
        (directive($_, 'webhook_lock') // '') eq $format
        && (!defined $signed
            || $signed == ((directive($_, 'webhook_signature') // 'off')
                           ne 'off'))
    } @locations;

    die "the guide has " . @l . " webhook_lock $format locations\n"
        unless @l == 1;

    return $l[0];
}

sub secrets {
    my ($loc) = @_;

    return map {
        s/^"(.*)"$/$1/r
    } map {
        /^\$(\w+)$/ ? ($secret{$1} // die "no map for \$$1\n") : $_
    } split ' ', directive($loc, 'webhook_signature');
}

sub seconds {
    my ($v) = @_;
    return 0 unless defined $v;
    $v =~ /^(\d+)(ms|s|m)?$/ or die "time \"$v\"\n";
    return $1 / 1000 if ($2 // 's') eq 'ms';
    return $1 * 60 if ($2 // 's') eq 'm';
    return $1;
}

my $FORM = 'application/x-www-form-urlencoded';

sub meta {
    my ($body, $secret) = @_;
    return [ 'X-Hub-Signature-256' => Provider::meta_signature($body,
                                                               $secret) ];
}

sub tiktok {
    my ($body, $secret) = @_;
    return [ 'Tiktok-Signature' => Provider::tiktok_signature($body,
                                                              $secret) ];
}

# the URL Twilio signs, from the guide's webhook_signature_url

sub twilio_signer {
    my ($url_tpl, $uri) = @_;

    die "webhook_signature_url \"$url_tpl\": only \$request_uri is known"
        . " here\n" if $url_tpl =~ s/\$request_uri//r =~ /\$/;

    (my $url = $url_tpl) =~ s/\$request_uri/$uri/;

    return sub {
        my ($body, $secret) = @_;
        return [ 'X-Twilio-Signature'
                 => Provider::twilio_signature($url, $body, $secret) ];
    };
}

sub line {
    my ($body, $secret) = @_;
    return [ 'X-Line-Signature' => Provider::line_signature($body, $secret) ];
}

# Bandwidth's callback credentials, for the guide's auth_basic

$h->write_file('bandwidth.htpasswd', "bandwidth:{PLAIN}cb-password\n");

my $BASIC = 'Basic ' . encode_base64('bandwidth:cb-password', '');
my $tg_token = '123456789:AAE-guide-bot-token';

my $expected = $h->fixtures_expected;

my $d360 = location_of('whatsapp', 0);
my ($d360_number) = $d360->{spec} =~ /(\d{6,})/;

my $twilio = location_of('twilio');
my $twilio_uri = '/twilio/callback';

my @routes = (
    { name => 'whatsapp', uri => '/webhooks/whatsapp/+12345678911',
      loc => location_of('whatsapp', 1), sign => \&meta,
      fixture => 'whatsapp_cloud-job-text-phone-and-bsuid.json' },
    { name => 'whatsapp_360dialog', uri => "/webhooks/whatsapp/+$d360_number",
      loc => $d360, fixture => 'dialog360-text.json' },
    { name => 'instagram', uri => '/webhooks/instagram',
      loc => location_of('instagram'), sign => \&meta,
      fixture => 'instagram-text.json' },
    { name => 'messenger', uri => '/bot',
      loc => location_of('messenger'), sign => \&meta,
      fixture => 'messenger-text-DERIVED-http-envelope.json' },
    { name => 'tiktok', uri => '/webhooks/tiktok',
      loc => location_of('tiktok'), sign => \&tiktok,
      fixture => 'tiktok-im_receive_msg.json' },
    { name => 'twilio', uri => $twilio_uri, loc => $twilio, form => 1,
      sign => twilio_signer(directive($twilio, 'webhook_signature_url'),
                            $twilio_uri),
      fixture => 'twilio-sms-new-conversation.form.txt' },
    { name => 'telegram', uri => "/webhooks/telegram/$tg_token",
      loc => location_of('telegram'), fixture => 'telegram-text.json' },
    { name => 'line', uri => '/webhooks/line/1657000000',
      loc => location_of('line'), sign => \&line,
      fixture => 'line-text.json' },
    { name => 'sms', uri => '/webhooks/sms/+12345678911',
      loc => location_of('sms'), headers => [ Authorization => $BASIC ],
      fixture => 'bandwidth_sms-body-message-received.json' },
);

for my $r (@routes) {
    my $e = $expected->{ $r->{fixture} };
    $r->{inbox} = $e->{inbox} // $r->{uri};
    $r->{ids} = $e->{message_ids};
    $r->{senders} = $e->{senders};
    $r->{body} = $h->fixture($r->{fixture});
    $r->{body} =~ s/\s+\z// if $r->{form};      # as Twilio sends it
    $r->{secrets} = [ $r->{sign} ? secrets($r->{loc}) : () ];
}

# the telegram inbox: the URI with the bot token hashed

my ($tg) = grep { $_->{name} eq 'telegram' } @routes;
$tg->{inbox} = '/webhooks/telegram/sha256-'
               . substr(sha256_hex($tg_token), 0, 32);

# leftovers of an earlier run in a Redis of TEST_NGINX_REDIS_PORT

my ($wa) = grep { $_->{name} eq 'whatsapp' } @routes;
my ($fb) = grep { $_->{name} eq 'messenger' } @routes;

for my $r (@routes) {
    $redis->cmd('DEL', "webhook:dedup:{$r->{inbox}}:$_") for @{ $r->{ids} };
}

$redis->cmd('DEL', "webhook:dedup:{$wa->{inbox}}:wamid-album-$_") for 1, 2;
$redis->cmd('DEL', "webhook:dedup:{$fb->{inbox}}:m_inflight");

###############################################################################

$h->start($http);

my $slow = $h->slowness;

sub post {
    my ($r, %o) = @_;

    my $body = $o{body} // $r->{body};
    my $secret = $o{secret} // $r->{secrets}[0];
    my @headers = ('Content-Type' => $r->{form} ? $FORM
                                                : 'application/json');

    push @headers, @{ $r->{sign}->($body, $secret) } if $r->{sign};
    push @headers, @{ $r->{headers} || [] } unless $o{anonymous};
    push @headers, @{ $o{headers} || [] };

    return $h->request(POST => $r->{uri}, body => $body,
                       headers => \@headers, timeout => 30);
}

sub poll {
    my ($code, $timeout) = @_;
    my $deadline = time + $timeout * $slow;
    until ($code->()) {
        return 0 if time > $deadline;
        sleep 0.05;
    }
    return 1;
}

sub lock_free {
    my ($r) = @_;
    return poll(sub {
        !grep { $redis->cmd('EXISTS', "webhook:{$r->{inbox}}:$_") }
              @{ $r->{senders} }
    }, 10);
}

for my $r (@routes) {
    my $n = $r->{name};

    $up->clear;

    my $res = post($r);
    is($res->{status}, 200, "$n: forwarded") or diag $res->{body};

    my @reqs = $up->requests;
    is(scalar @reqs, 1, "$n: one request upstream");
    ok(@reqs && $reqs[0]{body} eq $r->{body}, "$n: body byte-identical");
    is(@reqs && $reqs[0]{uri}, $r->{uri}, "$n: uri untouched");
    is(@reqs && $reqs[0]{headers}{'x-webhook-lock'}, 'acquired',
       "$n: X-Webhook-Lock: acquired");

    # a redelivery, once the ids are marked done after the 2xx

    if (defined directive($r->{loc}, 'webhook_dedup') && @{ $r->{ids} }) {
        my @keys = map { "webhook:dedup:{$r->{inbox}}:$_" } @{ $r->{ids} };

        ok(poll(sub { !grep { ($redis->cmd('GET', $_) // '') ne 'done' }
                          @keys }, 5),
           "$n: message id marked done");

        $res = post($r);
        is($res->{status}, 200, "$n: redelivery answered 200");
        is($res->{body}, '{"status":"duplicate"}', "$n: as a duplicate");
        is(scalar($up->requests), 1, "$n: the app did not see it again");
    }

    if ($r->{sign}) {
        $res = post($r, secret => 'not-the-secret');
        is($res->{status}, 401, "$n: wrong signature refused");
        is($res->{body}, '{"error":"invalid_signature"}',
           "$n: invalid_signature");

        my @more = @{ $r->{secrets} }[1 .. $#{ $r->{secrets} }];

        for my $s (@more) {
            $res = post($r, secret => $s);
            is($res->{status}, 200, "$n: the next secret listed verifies");
        }

        is(scalar($up->requests), 1, "$n: nothing more reached the app");
    }

    if ($r->{headers}) {
        $res = post($r, anonymous => 1);
        is($res->{status}, 401, "$n: without credentials refused");
        is(scalar($up->requests), 1, "$n: and not in the app");
    }
}

###############################################################################

# GET handshakes pass untouched

$up->clear;

my $hs = 0;

for my $uri ($wa->{uri}, "/webhooks/whatsapp/+$d360_number",
             '/webhooks/instagram', '/bot')
{
    my $challenge = 1158201444 + $hs++;
    my $q = "$uri?hub.mode=subscribe&hub.challenge=$challenge"
            . "&hub.verify_token=my-verify-token";

    my $res = $h->request(GET => $q);
    is($res->{status}, 200, "GET $uri: answered by the app");
    is($res->{body}, $challenge, "GET $uri: hub.challenge echoed");
}

my $res = $h->request(GET => '/webhooks/tiktok');
is($res->{status}, 200, 'GET /webhooks/tiktok: passed to the app');

my @gets = $up->requests;
is(scalar @gets, 5, 'every GET reached the app');
is(scalar(grep { $_->{method} eq 'GET' } @gets), 5, 'as GET');
is(scalar(grep { defined $_->{headers}{'x-webhook-lock'} } @gets), 0,
   'with no gate status: no gate ran');
like($gets[0]{uri}, qr/^\/webhooks\/whatsapp\/\+12345678911\?hub\.mode=/,
     'query string untouched');

###############################################################################

# waiting at the edge (or, before it, 503)

# two images of an album: one contact, two message ids

ok(lock_free($wa), 'whatsapp: the contact is free again');

$up->clear;

my @album = map { $wa->{body} =~ s/"wamid-test"/"wamid-album-$_"/r } 1, 2;

# the first held in the app until the second is in place: waiting in
# the queue, or answered

sub send_held {
    my ($r, $body, $hold) = @_;

    my @hd;

    for my $i (0, 1) {
        push @hd, $h->request_async(POST => $r->{uri}, body => $body->[$i],
            timeout => 30,
            headers => [ 'Content-Type' => 'application/json',
                         $i ? () : ('X-Test-Hold' => $hold),
                         @{ meta($body->[$i], $r->{secrets}[0]) } ]);

        next if $i;

        $up->wait_arrived(1) or die "$hold: the first did not arrive\n";
    }

    my @queues = map { "webhook:{$r->{inbox}}:$_:q" } @{ $r->{senders} };

    $h->wait_for(sub {
        $h->done_async($hd[1])
        || grep { $redis->cmd('LLEN', $_) > 0 } @queues
    }) or die "$hold: the second is not in place\n";

    $up->release($hold);

    return @hd;
}

my @res = $h->wait_all(send_held($wa, \@album, 'album'));
my @reqs = $up->requests;
my $hold = seconds(directive($wa->{loc}, 'webhook_lock_hold'));

if ($waits) {
    is(join(',', map { $_->{status} } @res), '200,200',
       'album: both images forwarded');
    is(join(',', map { $_->{headers}{'x-webhook-lock'} } @reqs),
       'acquired,waited', 'album: the second waited its turn');

    my $gap = @reqs == 2 ? $reqs[1]{arrived} - $reqs[0]{arrived} : 0;
    ok($gap >= $hold - 0.3 && $gap < seconds(directive($wa->{loc},
                                                      'webhook_lock_wait')),
       sprintf 'album: one hold (%gs) apart: %.2fs', $hold, $gap);

} else {
    is(join(',', sort map { $_->{status} } @res), '200,503',
       'album: one forwarded, one answered 503');
    my ($busy) = grep { ($_->{status} // 0) == 503 } @res;
    like($busy && $busy->{body}, qr/"error":"sender_busy"/, 'sender_busy');
    is($busy && $busy->{headers}{'retry-after'},
       directive($wa->{loc}, 'webhook_retry_after')
       // ($http =~ /^\s*webhook_retry_after\s+(\d+)/m)[0],
       'Retry-After as the guide sets it');
}

# a redelivery while the message is still in the app

ok(lock_free($fb), 'messenger: the contact is free again');

$up->clear;

my $inflight = $fb->{body} =~ s/"mid"\s*:\s*"[^"]*"/"mid":"m_inflight"/r;
isnt($inflight, $fb->{body}, 'messenger: a message of its own');

@res = $h->wait_all(send_held($fb, [ $inflight, $inflight ], 'inflight'));

is($res[0]{status}, 200, 'in flight: the first delivery forwarded');
is(scalar($up->requests), 1, 'in flight: the app saw the message once');

if ($waits) {
    is($res[1]{status}, 200, 'in flight: the redelivery waited');
    is($res[1]{body}, '{"status":"duplicate"}', 'then answered duplicate');

} else {
    is($res[1]{status}, 503, 'in flight: the redelivery answered 503');
    like($res[1]{body}, qr/"error":"duplicate_in_progress"/,
         'duplicate_in_progress');
}

###############################################################################

# the status server, the access log, nothing left behind

$res = $h->request(GET => '/webhook_status', port => 'status');
is($res->{status}, 200, 'webhook_status answers');

for my $r (@routes) {
    like($res->{body},
         qr/^webhook_lock_requests_total
             \{location="$r->{name}",status="acquired"\}\ [1-9]/mx,
         "webhook_status: $r->{name} acquired");
}

like($res->{body}, qr/\{location="whatsapp",status="duplicate"\} [1-9]/m,
     'webhook_status: duplicates counted');
like($res->{body}, qr/\{location="whatsapp",status="unsigned"\} [1-9]/m,
     'webhook_status: bad signatures counted');

$res = $h->request(GET => '/webhook_status?format=json', port => 'status');
like($res->{body}, qr/^\{"requests":\{/, 'webhook_status: JSON');

my @log = split /\n/, $h->read_file('webhooks.log');
my $line = '"POST /bot HTTP/1.1" 200 lock=acquired senders=3383290475046708 ';
ok(scalar(grep { index($_, $line) >= 0 } @log),
   'webhooks.log: what the gate did');
is(scalar(grep { /"GET / } @log), 0, 'webhooks.log: gated requests only');
ok(scalar(grep { index($_, "\"POST $tg->{inbox}\" 200 lock=acquired") >= 0 }
          @log), 'webhooks.log: telegram by its hashed inbox');
is(scalar(grep { index($_, $tg_token) >= 0 } @log), 0,
   'webhooks.log: no bot token');
is(index($h->read_file('access.log'), $tg_token), -1,
   'access.log: no bot token');
ok(!grep({ index($_, $tg_token) >= 0 } @{ $redis->cmd('KEYS', '*') }),
   'Redis: no bot token in a key');

ok(poll(sub { !grep { !/^webhook:dedup:/ } @{ $redis->cmd('KEYS',
                                                          'webhook:*') } },
        10),
   'no lock nor queue left');

$h->done;
