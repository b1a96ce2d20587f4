-- Accounts the proxies need on every server: the application user (created by the image
-- from MARIADB_USER), the monitor, the proxies' shared-configuration account, and the
-- replication user the replicas use.
CREATE USER IF NOT EXISTS 'monitor'@'%' IDENTIFIED BY 'monitor';
GRANT PROCESS, REPLICA MONITOR, BINLOG MONITOR ON *.* TO 'monitor'@'%';
CREATE USER IF NOT EXISTS 'sluice_cluster'@'%' IDENTIFIED BY 'sluice_cluster';
GRANT ALL ON sluice.* TO 'sluice_cluster'@'%';
CREATE USER IF NOT EXISTS 'repl'@'%' IDENTIFIED BY 'repl';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';
GRANT ALL ON *.* TO 'app'@'%';
