package Chatwoot;

# A stand-in for Chatwoot's webhook ingestion, race-prone on purpose: for
# each message it looks for the sender's conversation, waits a moment (the
# window real apps have between "find" and "create"), then creates one if
# it found none.  Two webhooks of one sender inside that window make two
# conversations, which is the bug the gate exists to prevent.
#
#   my $app = Chatwoot->start(port => $port, dir => $dir, window => 0.15);
#
# It reads WhatsApp Cloud API bodies and Telegram updates.  Two options
# make the race certain rather than likely: "barrier => N" lets no message
# past "find" until N messages have got there, and "hold => FILE" lets no
# message past "find" until FILE exists (both bounded by 30 s).
#   $app->conversations;   # { sender => number of conversations }
#   $app->messages;        # [ { sender, id, conversation, start, end } ]
#   $app->arrivals;        # messages past "find" (with barrier or hold)
#   $app->stop;
#
# A request whose URI has ?hold=NAME is held inside that window, after
# the search, until $app->release(NAME) (60 s at most); $app->held(NAME)
# says how many have got there.  A test can so make sure that a burst is
# all inside the window at once, or that a request stays in the app until
# the others have been answered or queued.

use strict;
use warnings;

use Fcntl qw/:flock/;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw/_exit WNOHANG/;
use Time::HiRes qw/time sleep/;

sub start {
    my ($class, %opts) = @_;

    my $self = bless {
        port   => $opts{port},
        dir    => $opts{dir},
        window => $opts{window} // 0.15,
        barrier => $opts{barrier},
        hold   => $opts{hold},
    }, $class;

    my $listen = IO::Socket::INET->new(
        LocalAddr => '127.0.0.1', LocalPort => $self->{port},
        Listen => 128, ReuseAddr => 1, Proto => 'tcp',
    ) or die "chatwoot stand-in: listen: $!";

    my $pid = fork() // die "fork: $!";

    if ($pid == 0) {
        setpgrp(0, 0);
        $SIG{CHLD} = 'IGNORE';
        while (1) {
            my $c = $listen->accept or next;
            my $kid = fork();
            if (defined $kid && $kid == 0) {
                $self->_serve($c);
                _exit(0);
            }
            close $c;
        }
    }

    close $listen;
    $self->{pid} = $pid;
    $self->{owner} = $$;
    return $self;
}

sub _serve {
    my ($self, $c) = @_;

    while (1) {
        my $head = '';
        while ($head !~ /\r\n\r\n/) {
            my $n = sysread($c, my $buf, 4096);
            return unless $n;
            $head .= $buf;
        }

        my ($top, $body) = split /\r\n\r\n/, $head, 2;
        my ($len) = $top =~ /^content-length:\s*(\d+)/im;
        $len //= 0;
        while (length($body) < $len) {
            my $n = sysread($c, my $buf, $len - length $body);
            return unless $n;
            $body .= $buf;
        }

        my $keepalive = $top !~ /^connection:\s*close/im
                        && $top =~ m{HTTP/1\.1};
        my ($uri) = $top =~ m{^\w+ (\S+)};

        my ($hold) = $uri =~ /[?&]hold=([\w.-]+)/;
        my $reply = $self->_ingest($uri, $body, $hold);
        my $out = encode_json($reply);

        print $c "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            . "Content-Length: " . length($out) . "\r\n"
            . ($keepalive ? "" : "Connection: close\r\n") . "\r\n$out";

        return unless $keepalive;
    }
}

# WhatsApp Cloud API bodies: entry[].changes[].value.messages[]
sub _ingest {
    my ($self, $uri, $body, $hold) = @_;

    my $start = time;
    my $json = eval { decode_json($body) } or return { ok => JSON::PP::true };
    my @messages;

    for my $entry (@{ $json->{entry} || [] }) {
        for my $change (@{ $entry->{changes} || [] }) {
            push @messages, @{ $change->{value}{messages} || [] };
        }
    }

    push @messages, _telegram($json) if exists $json->{update_id};

    my @done;

    for my $m (@messages) {
        my $sender = $m->{from};

        my $found = $self->_find($sender);
        $self->_wait;
        $self->_hold($hold) if defined $hold;
        sleep $self->{window};
        my $conversation = $found // $self->_create($sender);

        push @done, $conversation;
        $self->_append('messages', {
            sender => $sender, id => $m->{id}, conversation => $conversation,
            start => $start, end => time, pid => $$,
        });
    }

    return { ok => JSON::PP::true, conversations => \@done };
}

# the sender of an update, as Telegram::ParamHelpers sees it
sub _telegram {
    my ($json) = @_;

    for my $kind (qw/callback_query message edited_message business_message
                     edited_business_message/) {
        my $from = $json->{$kind} && $json->{$kind}{from} or next;
        return { from => $from->{id}, id => $json->{update_id} };
    }

    return ();
}

sub _wait {
    my ($self) = @_;

    my $deadline = time + 30;

    $self->_append('arrivals', { pid => $$ })
        if $self->{barrier} || $self->{hold};

    if ($self->{barrier}) {
        sleep 0.01 while $self->arrivals < $self->{barrier}
                         && time < $deadline;
    }

    if ($self->{hold}) {
        sleep 0.01 while !-e $self->{hold} && time < $deadline;
    }
}

sub _hold {
    my ($self, $name) = @_;

    $self->_append("held-$name", { pid => $$ });

    my $end = time + 60;
    sleep 0.02 until -e "$self->{dir}/chatwoot-release-$name" || time > $end;
}

sub held {
    my ($self, $name) = @_;
    return scalar @{ $self->_read("held-$name") };
}

sub release {
    my ($self, $name) = @_;

    open my $fh, '>', "$self->{dir}/chatwoot-release-$name" or die "$!";
    close $fh;
}

sub _find {
    my ($self, $sender) = @_;

    for my $c (@{ $self->_read('conversations') }) {
        return $c->{id} if $c->{sender} eq $sender;
    }

    return undef;
}

sub _create {
    my ($self, $sender) = @_;

    my $id = int(time * 1e6) . ".$$";
    $self->_append('conversations', { id => $id, sender => $sender });
    return $id;
}

sub _append {
    my ($self, $name, $record) = @_;

    open my $fh, '>>', "$self->{dir}/chatwoot-$name.log" or die "$!";
    flock $fh, LOCK_EX;
    print $fh encode_json($record), "\n";
    close $fh;
}

sub _read {
    my ($self, $name) = @_;

    open my $fh, '<', "$self->{dir}/chatwoot-$name.log" or return [];
    flock $fh, LOCK_SH;
    my @records = map { decode_json($_) } <$fh>;
    close $fh;
    return \@records;
}

# messages that got past "find" (with barrier or hold)
sub arrivals {
    my ($self) = @_;

    return scalar @{ $self->_read('arrivals') };
}

sub conversations {
    my ($self) = @_;

    my %count;
    $count{ $_->{sender} }++ for @{ $self->_read('conversations') };
    return \%count;
}

sub messages {
    my ($self) = @_;

    return [ sort { $a->{start} <=> $b->{start} }
             @{ $self->_read('messages') } ];
}

sub stop {
    my ($self) = @_;

    return unless $self->{pid} && $self->{owner} == $$;
    kill 'TERM', -$self->{pid};
    waitpid $self->{pid}, 0;
    delete $self->{pid};
}

sub DESTROY {
    $_[0]->stop;
}

1;
