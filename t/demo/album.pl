#!/usr/bin/perl

# ./build.sh demo: an album of six images from one WhatsApp contact, sent
# at once, first straight to a race-prone stand-in for Chatwoot, then
# through nginx with webhook_lock, the provider redelivering on 503 after
# Retry-After, then through a location that waits at the edge instead.  Prints what happened; exits non-zero if the gate let the
# race through or lost a message.  --keep leaves everything running.

use strict;
use warnings;

use File::Basename qw/dirname/;
use File::Temp qw/tempdir/;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw/setsid _exit/;
use Time::HiRes qw/time sleep/;

use lib dirname(__FILE__) . '/../lib';
use Chatwoot;

my $module = shift or die "usage: album.pl MODULE.so [--keep]\n";
my $keep = grep { $_ eq '--keep' } @ARGV;

my $dir = tempdir('webhook-lock-demo-XXXXXX', TMPDIR => 1,
                  CLEANUP => !$keep);
my %port = map { $_ => free_port() } qw/redis app nginx/;
my $images = 6;
my $main = $$;

$| = 1;

system('redis-server', '--port', $port{redis}, '--bind', '127.0.0.1',
       '--save', '', '--appendonly', 'no', '--daemonize', 'yes',
       '--pidfile', "$dir/redis.pid", '--logfile', "$dir/redis.log") == 0
    or die "redis-server did not start\n";
wait_port($port{redis});

my $app = start_app();

# whatever happens from here on, nothing is left running (unless --keep)
END { local $?; stop_all() if $dir && !$keep && $$ == $main }

write_file("$dir/nginx.conf", <<"CONF");
load_module $module;
pid $dir/nginx.pid;
error_log $dir/error.log notice;
worker_processes 1;
events { worker_connections 1024; }

http {
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;

    log_format webhook '\$time_iso8601 \$status \$webhook_lock_status '
                       'sender=\$webhook_sender inbox=\$webhook_inbox '
                       'id=\$webhook_message_id redis=\$webhook_redis_time';
    access_log $dir/access.log webhook;

    webhook_redis 127.0.0.1:$port{redis};

    upstream chatwoot {
        server 127.0.0.1:$port{app};
    }

    server {
        listen 127.0.0.1:$port{nginx};

        location ~ ^/webhooks/whatsapp/(?<phone>[^/]+)\$ {
            webhook_lock        whatsapp;
            webhook_lock_ttl    30s;
            webhook_retry_after 1;
            proxy_pass http://chatwoot;
        }

        location ~ ^/waiting/whatsapp/(?<phone>[^/]+)\$ {
            webhook_lock        whatsapp;
            webhook_lock_ttl    30s;
            webhook_lock_wait   10s;
            add_header X-Webhook-Lock \$webhook_lock_status always;
            add_header X-Webhook-Lock-Wait \$webhook_lock_wait_time always;
            proxy_pass http://chatwoot;
        }
    }
}
CONF

{
    # A sanitizer build needs its runtime first (./build.sh asan).  No
    # leak check: the parent that daemonizes exits without freeing PCRE2's
    # compile context, nginx's own; the harness checks leaks of nginx run
    # in the foreground.
    local $ENV{LD_PRELOAD} = $ENV{TEST_NGINX_PRELOAD}
        if $ENV{TEST_NGINX_PRELOAD};
    local $ENV{ASAN_OPTIONS} = 'detect_leaks=0'
        if $ENV{TEST_NGINX_PRELOAD};

    system('nginx', '-p', "$dir/", '-c', "$dir/nginx.conf", '-e',
           "$dir/error.log") == 0 or die "nginx did not start\n";
}
wait_port($port{nginx});

print "webhook_lock demo: a WhatsApp contact sends an album of $images "
    . "images\n\n";

# 1. straight to the app: the race

album($port{app}, '15550001111', 'direct');
my $direct = $app->conversations->{'15550001111'} // 0;
printf "  straight to the app:  %d webhooks at once -> %d conversations "
    . "for one contact\n\n", $images, $direct;

# 2. through the gate, the provider redelivering on 503

my $start = time;
my @attempts = album($port{nginx}, '15550002222', 'gate');

print "  through nginx + webhook_lock (the provider redelivers on 503):\n";
for my $a (sort { $a->{t} <=> $b->{t} } @attempts) {
    printf "    %5.2fs  image %d  %s\n", $a->{t} - $start, $a->{n},
        $a->{status} == 200 ? "200, forwarded to the app"
        : "$a->{status} $a->{error}, Retry-After: $a->{retry}";
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

$start = time;
my @waits = album($port{nginx}, '15550003333', 'wait',
                  '/waiting/whatsapp/12345678911');

print "\n  through a location with webhook_lock_wait 10s (no redelivery):\n";
for my $a (sort { $a->{done} <=> $b->{done} } @waits) {
    printf "    %5.2fs  image %d  %s\n", $a->{done} - $start, $a->{n},
        $a->{status} == 200
        ? "200, forwarded to the app after $a->{wait} s at the edge "
          . "($a->{lock})"
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
    print <<"TEXT";

Everything is still running (files in $dir):
  nginx with the module   http://127.0.0.1:$port{nginx}/webhooks/whatsapp/<phone>
  redis-server            127.0.0.1:$port{redis}
  Chatwoot stand-in       127.0.0.1:$port{app}

Send your own webhook:
  curl -i -H 'Content-Type: application/json' \\
    http://127.0.0.1:$port{nginx}/webhooks/whatsapp/12345678911 \\
    -d '{"object":"whatsapp_business_account","entry":[{"changes":[{"value":
{"metadata":{"phone_number_id":"123456789"},"messages":[{"from":"15557654321",
"id":"wamid.1","type":"text","text":{"body":"hi"}}]}}]}]}'

Watch it:  tail -f $dir/access.log
Stop it:   kill \$(cat $dir/nginx.pid $dir/redis.pid); kill -- -\$(cat $dir/app.pid)
TEXT
    exit($ok ? 0 : 1);
}

stop_all();
exit($ok ? 0 : 1);


sub album {
    my ($port, $sender, $tag, $uri) = @_;

    my @kids;

    for my $n (1 .. $images) {
        my $pid = fork() // die "fork: $!";
        if ($pid == 0) {
            deliver($port, $sender, $n, "$dir/$tag-$n.json",
                    $uri // '/webhooks/whatsapp/12345678911');
            _exit(0);
        }
        push @kids, $pid;
    }

    waitpid $_, 0 for @kids;

    return map { @{ decode_json(read_file("$dir/$tag-$_.json")) } }
           1 .. $images;
}

# a provider: post, and on 503 redeliver after Retry-After
sub deliver {
    my ($port, $sender, $n, $file, $uri) = @_;

    my $body = encode_json({
        object => 'whatsapp_business_account',
        entry => [{ id => '102290129340398', changes => [{
            field => 'messages',
            value => {
                messaging_product => 'whatsapp',
                metadata => { display_phone_number => '12345678911',
                              phone_number_id => '123456789' },
                contacts => [{ wa_id => $sender,
                               profile => { name => 'Album sender' } }],
                messages => [{ from => $sender, id => "wamid.album.$n",
                               timestamp => int(time), type => 'image',
                               image => { id => "media-$n",
                                          mime_type => 'image/jpeg' } }],
            },
        }] }],
    });

    my @attempts;

    for (1 .. 20) {
        my $t = time;
        my ($status, $head, $reply) = post($port, $uri, $body);
        my ($retry) = $head =~ /^retry-after:\s*(\d+)/im;
        my ($error) = $reply =~ /"error":"(\w+)"/;
        my ($lock) = $head =~ /^x-webhook-lock:\s*(\S+)/im;
        my ($wait) = $head =~ /^x-webhook-lock-wait:\s*(\S+)/im;

        push @attempts, { n => $n, t => $t, done => time, status => $status,
                          retry => $retry // '-', error => $error // '',
                          lock => $lock // '-', wait => $wait // '-' };
        last if $status == 200;
        sleep(($retry // 1) + rand(0.2));
    }

    write_file($file, encode_json(\@attempts));
}

sub post {
    my ($port, $uri, $body) = @_;

    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
                                  Timeout => 5) or return (0, '', '');
    print $s "POST $uri HTTP/1.1\r\nHost: localhost\r\n"
        . "Content-Type: application/json\r\n"
        . "Content-Length: " . length($body) . "\r\n"
        . "Connection: close\r\n\r\n$body";

    local $/;
    my $raw = <$s> // '';
    my ($head, $reply) = split /\r\n\r\n/, $raw, 2;
    my ($status) = ($head // '') =~ m{^HTTP/1\.\d (\d+)};

    return ($status // 0, $head // '', $reply // '');
}

# the most requests of one contact inside the app at the same time
sub overlap {
    my @m = @_;

    my $max = 0;
    for my $a (@m) {
        my $n = grep { $_->{start} < $a->{end} && $a->{start} < $_->{end} }
                @m;
        $max = $n if $n > $max;
    }

    return $max;
}

sub start_app {
    my $pid = fork() // die "fork: $!";

    if ($pid == 0) {
        setsid();
        my $app = Chatwoot->start(port => $port{app}, dir => $dir);
        write_file("$dir/app.pid", $app->{pid});
        $app->{owner} = 0;
        _exit(0);
    }

    waitpid $pid, 0;
    wait_port($port{app});

    return bless { dir => $dir, owner => 0 }, 'Chatwoot';
}

my $stopped;

sub stop_all {
    return if $stopped++;

    for my $name (qw/nginx redis app/) {
        my $pid = eval { read_file("$dir/$name.pid") } or next;
        chomp $pid;
        kill 'TERM', $name eq 'app' ? -$pid : $pid;
    }

    sleep 0.3;
}

sub wait_port {
    my ($port) = @_;

    for (1 .. 50) {
        return if IO::Socket::INET->new("127.0.0.1:$port");
        sleep 0.1;
    }

    die "nothing listens on port $port\n";
}

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Listen => 1, ReuseAddr => 1) or die "$!";
    return $s->sockport;
}

sub read_file {
    open my $fh, '<', $_[0] or die "$_[0]: $!";
    local $/;
    return scalar <$fh>;
}

sub write_file {
    open my $fh, '>', $_[0] or die "$_[0]: $!";
    print $fh $_[1];
    close $fh;
}
