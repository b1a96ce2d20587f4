// Checks run through Sluice with MariaDB Connector/J and server-side prepared statements
// (useServerPrepStmts=true): prepared inserts, then prepared reads of each row in
// autocommit (they see the write and are served by the replicas), then a transaction whose
// reads stay on the writer. Run with Java's source launcher:
//   java -cp /usr/share/java/mariadb-java-client.jar ConnectorJ.java PORT
// Exits non-zero with a message when the proxy got something wrong; prints one line of
// facts on success.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.TreeMap;

public class ConnectorJ {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:mariadb://127.0.0.1:" + args[0]
            + "/sbtest?user=app&password=app&useServerPrepStmts=true";
        try (Connection conn = DriverManager.getConnection(url)) {
            try (Statement plain = conn.createStatement()) {
                plain.execute("CREATE TABLE IF NOT EXISTS driver_j (id INT PRIMARY KEY, v VARCHAR(20))");
                plain.execute("DELETE FROM driver_j");
            }
            TreeMap<String, Integer> ports = new TreeMap<>();
            try (PreparedStatement insert = conn.prepareStatement("INSERT INTO driver_j VALUES (?, ?)");
                 PreparedStatement select = conn.prepareStatement(
                     "SELECT v, @@port FROM driver_j WHERE id = ?")) {
                for (int i = 1; i <= 100; i++) {
                    insert.setInt(1, i);
                    insert.setString(2, "value-" + i);
                    check(insert.executeUpdate() == 1, "insert " + i);
                    select.setInt(1, i);
                    try (ResultSet rs = select.executeQuery()) {
                        check(rs.next(), "row " + i + " read back");
                        check(rs.getString(1).equals("value-" + i), "row " + i + ": " + rs.getString(1));
                        ports.merge(rs.getString(2), 1, Integer::sum);
                    }
                }
                int onReplicas = ports.getOrDefault("13309", 0) + ports.getOrDefault("13310", 0);
                // a read whose replica has not applied the write within causal_read_wait_ms
                // goes to the writer, by design: under the other tests' load a few do
                check(onReplicas >= 80, "reads on the replicas: " + ports);
                conn.setAutoCommit(false);
                select.setInt(1, 1);
                try (ResultSet rs = select.executeQuery()) {
                    check(rs.next() && rs.getString(2).equals("13306"), "a read in a transaction stays on the writer");
                }
                conn.commit();
                System.out.println("connector/j ok: " + onReplicas + " of 100 reads on the replicas " + ports);
            }
        }
    }

    static void check(boolean ok, String what) {
        if (!ok) {
            System.err.println("failed: " + what);
            System.exit(1);
        }
    }
}
