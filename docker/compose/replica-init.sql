-- A replica of galera3 by GTID. It starts from an empty server: what existed before galera3
-- joined the cluster is not in galera3's binary log, so the replica gets the accounts from
-- users.sql below and everything created after start through replication.
CREATE USER IF NOT EXISTS 'monitor'@'%' IDENTIFIED BY 'monitor';
GRANT PROCESS, REPLICA MONITOR, BINLOG MONITOR ON *.* TO 'monitor'@'%';
CREATE USER IF NOT EXISTS 'app'@'%' IDENTIFIED BY 'app';
GRANT ALL ON *.* TO 'app'@'%';
CHANGE MASTER TO MASTER_HOST = 'galera3', MASTER_USER = 'repl', MASTER_PASSWORD = 'repl',
  MASTER_USE_GTID = slave_pos;
START SLAVE;
